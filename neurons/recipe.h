/* The scalar recipe of the latent neuron (design §1.2, §2.1): its constants, the clamp and the
 * Poisson inverse CDF, one float64 transcription for every compiled backend.
 *
 * Included by neurons/_kernels.c (the reference simulator) and by Brian2's generated cython
 * and C++ code (neurons/brian.py); neurons/poisson.py parses the IPVAE_* constants below at
 * import, so changing a constant here changes it everywhere (tests/test_recipe.py checks it).
 * Valid C99 and C++.  Units: x, c are membrane potentials (log-rates); r is a rate (spikes
 * per step); xi a uniform in [0, 1); counts are returned as float64.
 *
 * Brian2 compiles its code with -ffast-math and -march=native; the functions here ask GCC and
 * clang for IEEE semantics without FMA contraction, so they round as the numpy code does.
 */
#ifndef IPVAE_RECIPE_H
#define IPVAE_RECIPE_H

#include <math.h>

/* --- constants (one per line, "#define IPVAE_<NAME> <float literal>": parsed by Python) --- */
#define IPVAE_U_FLOOR (-8.0)            /* hard floor of du and u, before the soft ceiling */
#define IPVAE_ICDF_START_SIGMAS 10.0    /* the search starts this many sqrt(r) below r */
#define IPVAE_ICDF_CAP_SIGMAS 20.0      /* ... and stops at r + CAP_SIGMAS sqrt(r) + CAP_EXTRA */
#define IPVAE_ICDF_CAP_EXTRA 30.0
#define IPVAE_LOGE2 0.693147180559945309417232121458176568 /* log 2 = softplus(0) */

#if defined(__clang__)
#pragma float_control(precise, on, push)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("no-fast-math", "fp-contract=off")
#endif

/* max(x, U_FLOOR); NaN passes through (numpy's maximum). */
static inline double ipvae_floor(double x)
{
    return x < IPVAE_U_FLOOR ? IPVAE_U_FLOOR : x;
}

/* softplus(y) = log(1 + e^y), given l = log1p(exp(-|y|)): the branches of numpy's
 * npy_logaddexp(0, y), so that a caller may compute l with vectorised exp/log1p. */
static inline double ipvae_softplus_from(double y, double l)
{
    if (y == 0.0)
        return IPVAE_LOGE2;
    if (y > 0)
        return y + l;
    if (y < 0)
        return 0.0 + l;
    return -y; /* NaN */
}

static inline double ipvae_softplus(double y)
{
    return ipvae_softplus_from(y, log1p(exp(-fabs(y))));
}

/* The authors' clamp: hard floor, then the upper soft clamp c - softplus(c - x). */
static inline double ipvae_clamp(double x, double c)
{
    return c - ipvae_softplus(c - ipvae_floor(x));
}

/* Whether the search starts above m = 0 (r > START^2; below, the start is m = 0, p = e^-r). */
static inline int ipvae_icdf_far(double r)
{
    return r > IPVAE_ICDF_START_SIGMAS * IPVAE_ICDF_START_SIGMAS;
}

/* The start of the search for a far rate: m = floor(max(r - START sqrt(r), 0)) (returned) and
 * the Poisson pmf at m (in *p), computed in log space, which stays finite for r up to e^10. */
static inline double ipvae_icdf_start(double r, double *p)
{
    double m = floor(fmax(r - IPVAE_ICDF_START_SIGMAS * sqrt(r), 0.0));
    *p = exp((m > 0 ? m * log(r) : 0.0) - r - lgamma(m + 1.0));
    return m;
}

/* From count m with pmf p (and CDF p), the least count whose summed CDF reaches xi, or the
 * cap r + CAP_SIGMAS sqrt(r) + CAP_EXTRA (which ends searches for xi within rounding of 1). */
static inline double ipvae_icdf_search(double xi, double r, double m, double p)
{
    double cdf = p;
    if (!(cdf < xi))
        return m;
    const double cap = r + IPVAE_ICDF_CAP_SIGMAS * sqrt(r) + IPVAE_ICDF_CAP_EXTRA;
    while (cdf < xi && m < cap) {
        m += 1.0;
        p *= r / m;
        cdf += p;
    }
    return m;
}

/* The Poisson inverse CDF: the least m >= 0 with P(Z <= m; r) >= xi (as float64). */
static inline double ipvae_poisson_icdf(double xi, double r)
{
    double m = 0.0, p;
    if (ipvae_icdf_far(r))
        m = ipvae_icdf_start(r, &p);
    else
        p = exp(-r);
    return ipvae_icdf_search(xi, r, m, p);
}

#if defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif
