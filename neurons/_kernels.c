/* Compiled kernels of the reference simulator's step (design §1, §2).
 *
 * - `spikes`: the Poisson inverse CDF of recipe.h (design §2.1), fused with the rate e^u;
 * - `membrane`: membrane_update, with recipe.h's clamp (numpy's logaddexp branches);
 * - `readout`: the read-out Φz driven by the spikes fired (event-driven: work in
 *   proportion to the nonzero counts, as on neuromorphic hardware);
 * - `uniforms`: the shared-noise streams (_philox.h), equal to numpy's bit for bit.
 *
 * The constants and the scalar steps come from recipe.h.  exp and log1p run through
 * _vecmath.h: libmvec's AVX-512 or AVX2 code where available (within 1-2 ulp of libm), else scalar
 * libm; either way rates, potentials and counts meet the contract of design §2.1
 * (neurons.poisson.EXP_ULP_TOLERANCE, tests/test_kernels.py).  Everything else is compiled
 * without -ffast-math and with -ffp-contract=off, so no FMA or reassociation changes the
 * rounding of the transcribed formulas.  All work on C-contiguous float64 buffers (the
 * tables of rows that the event-driven sums read may be padded: get_rows) and release the
 * GIL, so callers may split a batch's rows across threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_philox.h"
#include "_vecmath.h"
#include "recipe.h"

#define CHUNK 256 /* elements per pass of the array-wide exp / log1p */

/* --- buffers ------------------------------------------------------------------------------ */

static void release(Py_buffer *views, int n)
{
    for (int i = 0; i < n; i++)
        PyBuffer_Release(&views[i]);
}

/* C-contiguous float64 buffers of args[0 .. n); the last n_writable are written. */
static int get_float64(PyObject *const *args, Py_buffer *views, int n, int n_writable)
{
    for (int i = 0; i < n; i++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (i >= n - n_writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(args[i], &views[i], flags) < 0) {
            release(views, i);
            return -1;
        }
        if (views[i].itemsize != sizeof(double) || strcmp(views[i].format, "d") != 0) {
            release(views, i + 1);
            PyErr_SetString(PyExc_ValueError, "kernel arguments must be C-contiguous float64 buffers");
            return -1;
        }
    }
    return 0;
}

/* As get_float64, and all of one length (returned in *size, in elements). */
static int get_equal(PyObject *const *args, Py_buffer *views, int n, int n_writable,
                     Py_ssize_t *size)
{
    if (get_float64(args, views, n, n_writable) < 0)
        return -1;
    for (int i = 1; i < n; i++) {
        if (views[i].len != views[0].len) {
            release(views, n);
            PyErr_SetString(PyExc_ValueError,
                            "kernel arguments must be C-contiguous float64 buffers of equal length");
            return -1;
        }
    }
    *size = views[0].len / (Py_ssize_t)sizeof(double);
    return 0;
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t expected, const char *signature)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", signature, expected);
    return -1;
}

/* A table of rows read by the event-driven sums (W, Phi^T): 2-D float64 whose rows are each
 * contiguous but may lie further apart (a padded array's view, see neurons.kernels.row_table);
 * returns the distance between rows in elements, or -1 with an error set.  None gives 0 and
 * view->buf == NULL when `optional`. */
static Py_ssize_t get_rows(PyObject *arg, Py_buffer *view, const char *what, int optional)
{
    if (optional && arg == Py_None) {
        memset(view, 0, sizeof(*view));
        return 0;
    }
    if (PyObject_GetBuffer(arg, view, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return -1;
    if (view->ndim != 2 || view->itemsize != 8 || strcmp(view->format, "d") != 0
            || view->strides[1] != 8 || view->strides[0] % 8 != 0
            || view->strides[0] < 8 * view->shape[1]) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be a 2-D float64 array whose rows are each "
                     "contiguous (C order, or a view of the first columns of one)", what);
        return -1;
    }
    return view->strides[0] / 8;
}

/* --- spikes ------------------------------------------------------------------------------- */

/* 2^-48: a margin far above the rounding of 1 - r (2^-53) and of e^-r (4 ulp of a value <= 1). */
#define ZERO_MARGIN 3.552713678800501e-15

/* rate[j] = e^u[j] and counts[j] = the recipe's count at uniform xi[j], j < m; returns the number of
 * nonzero counts and lists them (index, count) in nz_idx / nz_val when those are not NULL.
 * `scratch` holds 2 m doubles.  Where xi < 1 - r - 2^-48 the count is 0 without computing e^-r:
 * e^-r >= 1 - r, so the recipe's first test (e^-r >= xi) holds; the counts are the recipe's, bit
 * for bit (only the work is skipped).  Rates above START^2 start the search elsewhere. */
/* Whether the kernels take their own SIMD loops (the inverse CDF's scan and search, the
 * membrane's passes, the event-driven sums): 0 (scalar), 4 (AVX2) or 8 (AVX2, and AVX-512 for
 * the event-driven sums); set at import to the widest the CPU runs, switched by own_simd() for
 * tests; each loop gives its scalar code's numbers bit for bit. */
static int own_simd_lanes;

/* counts[j] = 0 for j0 <= j < m, and the candidates for a nonzero count (xi >= 1 - r - margin,
 * or NaN) listed after the first `rest` in idx, with p0 = -r (0 for a far rate); returns the
 * list's new length. */
static Py_ssize_t candidates_scan(const double *xi, const double *rate, double *counts,
                                  Py_ssize_t j0, Py_ssize_t m, Py_ssize_t *idx, double *p0,
                                  Py_ssize_t rest)
{
    for (Py_ssize_t j = j0; j < m; j++) {
        double r = rate[j];
        counts[j] = 0.0;
        if (xi[j] < (1.0 - r) - ZERO_MARGIN)
            continue;
        idx[rest] = j;
        p0[rest++] = ipvae_icdf_far(r) ? 0.0 : -r;
    }
    return rest;
}

#ifdef VECMATH_X86
/* The scan of spikes_span four lanes at a time: the same comparison (NaN a candidate), the
 * candidates' list in order; most groups of four hold none, so no branch per element. */
__attribute__((target("avx2"))) static Py_ssize_t candidates_scan_avx2(
        const double *xi, const double *rate, double *counts, Py_ssize_t m, Py_ssize_t *idx,
        double *p0)
{
    const __m256d one = _mm256_set1_pd(1.0), margin = _mm256_set1_pd(ZERO_MARGIN),
                  zero = _mm256_setzero_pd();
    Py_ssize_t j = 0, rest = 0;
    for (; j + 4 <= m; j += 4) {
        __m256d r = _mm256_loadu_pd(rate + j);
        __m256d edge = _mm256_sub_pd(_mm256_sub_pd(one, r), margin);
        int bits = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(xi + j), edge, _CMP_NLT_UQ));
        _mm256_storeu_pd(counts + j, zero);
        while (bits) {
            Py_ssize_t i = j + __builtin_ctz((unsigned)bits);
            bits &= bits - 1;
            idx[rest] = i;
            p0[rest++] = ipvae_icdf_far(rate[i]) ? 0.0 : -rate[i];
        }
    }
    return candidates_scan(xi, rate, counts, j, m, idx, p0, rest);
}
#endif

/* The recipe's count for candidate j whose e^-r is p (ignored for a far rate). */
static double search_one(const double *xi, const double *rate, Py_ssize_t j, double p)
{
    double c0 = 0.0;
    if (ipvae_icdf_far(rate[j]))
        c0 = ipvae_icdf_start(rate[j], &p);
    return ipvae_icdf_search(xi[j], rate[j], c0, p);
}

#ifdef VECMATH_X86
/* counts[idx[i]] for the candidates i in groups of four, each lane running recipe.h's
 * ipvae_icdf_search from count 0 with pmf p0[i]: a lane takes the scalar loop's operations in
 * its order and stops where it stops (blends keep a stopped lane's values), so the counts
 * are the scalar code's bit for bit.  A group with a far rate is left to search_one. Returns
 * how many candidates it did (a multiple of four; the rest are the caller's). */
__attribute__((target("avx2"))) static Py_ssize_t search_avx2(const double *xi,
                                                              const double *rate,
                                                              const Py_ssize_t *idx,
                                                              const double *p0, Py_ssize_t rest,
                                                              double *counts)
{
    const __m256d one = _mm256_set1_pd(1.0), sigmas = _mm256_set1_pd(IPVAE_ICDF_CAP_SIGMAS),
                  extra = _mm256_set1_pd(IPVAE_ICDF_CAP_EXTRA),
                  far = _mm256_set1_pd(IPVAE_ICDF_START_SIGMAS * IPVAE_ICDF_START_SIGMAS);
    Py_ssize_t i = 0;
    for (; i + 4 <= rest; i += 4) {
        const Py_ssize_t *q = idx + i;
        __m256d r = _mm256_set_pd(rate[q[3]], rate[q[2]], rate[q[1]], rate[q[0]]);
        __m256d x = _mm256_set_pd(xi[q[3]], xi[q[2]], xi[q[1]], xi[q[0]]);
        double c[4];
        if (_mm256_movemask_pd(_mm256_cmp_pd(r, far, _CMP_GT_OQ))) {
            for (int l = 0; l < 4; l++)
                counts[q[l]] = search_one(xi, rate, q[l], p0[i + l]);
            continue;
        }
        __m256d p = _mm256_loadu_pd(p0 + i), cdf = p, m = _mm256_setzero_pd();
        __m256d live = _mm256_cmp_pd(cdf, x, _CMP_LT_OQ);
        if (_mm256_movemask_pd(live)) {
            __m256d cap = _mm256_add_pd(_mm256_add_pd(r, _mm256_mul_pd(sigmas, _mm256_sqrt_pd(r))),
                                        extra);
            live = _mm256_and_pd(live, _mm256_cmp_pd(m, cap, _CMP_LT_OQ));
            while (_mm256_movemask_pd(live)) {
                m = _mm256_blendv_pd(m, _mm256_add_pd(m, one), live);
                p = _mm256_blendv_pd(p, _mm256_mul_pd(p, _mm256_div_pd(r, m)), live);
                cdf = _mm256_blendv_pd(cdf, _mm256_add_pd(cdf, p), live);
                live = _mm256_and_pd(live, _mm256_and_pd(_mm256_cmp_pd(cdf, x, _CMP_LT_OQ),
                                                         _mm256_cmp_pd(m, cap, _CMP_LT_OQ)));
            }
        }
        _mm256_storeu_pd(c, m);
        for (int l = 0; l < 4; l++)
            counts[q[l]] = c[l];
    }
    return i;
}
#endif

static Py_ssize_t spikes_span(const double *u, const double *xi, double *rate, double *counts,
                              Py_ssize_t m, double *scratch, Py_ssize_t *nz_idx, double *nz_val,
                              Py_ssize_t nz_base)
{
    double *p0 = scratch;
    Py_ssize_t *idx = (Py_ssize_t *)(scratch + m), rest = 0, fired = 0;
    memcpy(rate, u, (size_t)m * sizeof(double));
    map_exp(rate, m);
#ifdef VECMATH_X86
    if (own_simd_lanes)
        rest = candidates_scan_avx2(xi, rate, counts, m, idx, p0);
    else
#endif
        rest = candidates_scan(xi, rate, counts, 0, m, idx, p0, 0);
    map_exp(p0, rest);
    Py_ssize_t i = 0;
#ifdef VECMATH_X86
    if (own_simd_lanes)
        i = search_avx2(xi, rate, idx, p0, rest, counts);
#endif
    for (; i < rest; i++)
        counts[idx[i]] = search_one(xi, rate, idx[i], p0[i]);
    for (i = 0; i < rest; i++) {
        Py_ssize_t j = idx[i];
        double c = counts[j];
        if (c != 0.0) {
            if (nz_idx != NULL) {
                nz_idx[fired] = nz_base + j;
                nz_val[fired] = c;
            }
            fired++;
        }
    }
    return fired;
}

PyDoc_STRVAR(spikes_doc,
"spikes(u, xi, rate_out, counts_out) -> number of nonzero counts\n\n"
"rate_out = exp(u); counts_out = poisson_icdf(xi, rate_out) (as float64).\n"
"All four: C-contiguous float64 buffers of one length.");

static PyObject *spikes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 4, "spikes(u, xi, rate_out, counts_out)") < 0)
        return NULL;
    Py_buffer v[4];
    Py_ssize_t n, fired = 0;
    if (get_equal(args, v, 4, 2, &n) < 0)
        return NULL;
    const double *u = v[0].buf, *xi = v[1].buf;
    double *rate = v[2].buf, *counts = v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    double scratch[2 * CHUNK];
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t m = n - start < CHUNK ? n - start : CHUNK;
        fired += spikes_span(u + start, xi + start, rate + start, counts + start, m, scratch,
                             NULL, NULL, 0);
    }
    Py_END_ALLOW_THREADS
    release(v, 4);
    return PyLong_FromSsize_t(fired);
}

/* --- membrane ----------------------------------------------------------------------------- */

/* y[j] = c - max(x[j], U_FLOOR) (NaN passes), l[j] = -|y[j]|, then l[j] = log1p(exp(l[j])). */
static void clamp_start(const double *x, double c, double *y, double *l, Py_ssize_t m)
{
    for (Py_ssize_t j = 0; j < m; j++) {
        y[j] = c - ipvae_floor(x[j]);
        l[j] = -fabs(y[j]);
    }
    map_exp(l, m);
    map_log1p(l, m);
}

#ifdef VECMATH_X86
/* The membrane's element-wise passes four at a time.  Each lane computes the scalar code's
 * IEEE operations in the same order (sub, mul, add, compares and blends in place of its
 * branches), so the results are the scalar code's bit for bit, NaN included. */

/* x[j] = (fb[j] - b[j]) * eta, then as clamp_start up to the exp: y = c - max(x, U_FLOOR), l = -|y|. */
__attribute__((target("avx2"))) static void clamp_prep_avx2(const double *fb, const double *b,
                                                            double eta, double c, double *y,
                                                            double *l, Py_ssize_t m)
{
    const __m256d vc = _mm256_set1_pd(c), floor = _mm256_set1_pd(IPVAE_U_FLOOR),
                  sign = _mm256_set1_pd(-0.0), veta = _mm256_set1_pd(eta);
    Py_ssize_t j = 0;
    for (; j + 4 <= m; j += 4) {
        __m256d x = _mm256_loadu_pd(fb + j);
        if (b != NULL)
            x = _mm256_mul_pd(_mm256_sub_pd(x, _mm256_loadu_pd(b + j)), veta);
        x = _mm256_blendv_pd(x, floor, _mm256_cmp_pd(x, floor, _CMP_LT_OQ)); /* NaN passes */
        __m256d yv = _mm256_sub_pd(vc, x);
        _mm256_storeu_pd(y + j, yv);
        _mm256_storeu_pd(l + j, _mm256_or_pd(yv, sign));
    }
    for (; j < m; j++) {
        double x = b != NULL ? (fb[j] - b[j]) * eta : fb[j];
        y[j] = c - ipvae_floor(x);
        l[j] = -fabs(y[j]);
    }
}

/* out[j] = (c - softplus_from(y[j], l[j])) [+ add[j] when add is not NULL]. */
__attribute__((target("avx2"))) static void clamp_finish_avx2(const double *y, const double *l,
                                                              double c, const double *add,
                                                              double *out, Py_ssize_t m)
{
    const __m256d vc = _mm256_set1_pd(c), zero = _mm256_setzero_pd(),
                  loge2 = _mm256_set1_pd(IPVAE_LOGE2), sign = _mm256_set1_pd(-0.0);
    Py_ssize_t j = 0;
    for (; j + 4 <= m; j += 4) {
        __m256d yv = _mm256_loadu_pd(y + j), lv = _mm256_loadu_pd(l + j);
        __m256d sp = _mm256_blendv_pd(_mm256_add_pd(zero, lv), _mm256_add_pd(yv, lv),
                                      _mm256_cmp_pd(yv, zero, _CMP_GT_OQ));
        sp = _mm256_blendv_pd(sp, loge2, _mm256_cmp_pd(yv, zero, _CMP_EQ_OQ));
        sp = _mm256_blendv_pd(sp, _mm256_xor_pd(yv, sign), _mm256_cmp_pd(yv, yv, _CMP_UNORD_Q));
        __m256d r = _mm256_sub_pd(vc, sp);
        if (add != NULL)
            r = _mm256_add_pd(r, _mm256_loadu_pd(add + j));
        _mm256_storeu_pd(out + j, r);
    }
    for (; j < m; j++) {
        double r = c - ipvae_softplus_from(y[j], l[j]);
        out[j] = add != NULL ? r + add[j] : r;
    }
}
#endif


/* out = clamp(u + clamp(eta (fb - b), cdu), cu) over one row of k neurons (bias b (k,)). */
static void membrane_row(const double *u, const double *fb, const double *b, double *out,
                         Py_ssize_t k, double eta, double cu, double cdu)
{
    double x[CHUNK], y[CHUNK], l[CHUNK];
#ifdef VECMATH_X86
    if (own_simd_lanes) {
        for (Py_ssize_t c0 = 0; c0 < k; c0 += CHUNK) {
            Py_ssize_t m = k - c0 < CHUNK ? k - c0 : CHUNK;
            clamp_prep_avx2(fb + c0, b + c0, eta, cdu, y, l, m);
            map_exp(l, m);
            map_log1p(l, m);
            clamp_finish_avx2(y, l, cdu, u + c0, x, m);
            clamp_prep_avx2(x, NULL, 1.0, cu, y, l, m);
            map_exp(l, m);
            map_log1p(l, m);
            clamp_finish_avx2(y, l, cu, NULL, out + c0, m);
        }
        return;
    }
#endif
    for (Py_ssize_t c0 = 0; c0 < k; c0 += CHUNK) {
        Py_ssize_t m = k - c0 < CHUNK ? k - c0 : CHUNK;
        for (Py_ssize_t j = 0; j < m; j++)
            x[j] = (fb[c0 + j] - b[c0 + j]) * eta;
        clamp_start(x, cdu, y, l, m);
        for (Py_ssize_t j = 0; j < m; j++)
            x[j] = (cdu - ipvae_softplus_from(y[j], l[j])) + u[c0 + j];
        clamp_start(x, cu, y, l, m);
        for (Py_ssize_t j = 0; j < m; j++)
            out[c0 + j] = cu - ipvae_softplus_from(y[j], l[j]);
    }
}

PyDoc_STRVAR(membrane_doc,
"membrane(u, feedback, bias, out, eta, clamp_u, clamp_du)\n\n"
"out = clamp(u + clamp(eta * (feedback - bias), clamp_du), clamp_u) element by element,\n"
"clamp(x, c) = c - softplus(c - max(x, -8)).\n"
"u, feedback, out: C-contiguous float64 (rows, K) of one length; bias: float64 (K,).");

static PyObject *membrane(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 7, "membrane(u, feedback, bias, out, eta, clamp_u, clamp_du)") < 0)
        return NULL;
    double eta = PyFloat_AsDouble(args[4]), cu = PyFloat_AsDouble(args[5]),
           cdu = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *arrays[3] = {args[0], args[1], args[3]};
    Py_buffer v[3], vb;
    Py_ssize_t n, k;
    if (get_equal(arrays, v, 3, 1, &n) < 0)
        return NULL;
    if (get_float64(&args[2], &vb, 1, 0) < 0) {
        release(v, 3);
        return NULL;
    }
    k = vb.len / (Py_ssize_t)sizeof(double);
    if (k == 0 || n % k != 0) {
        release(v, 3);
        PyBuffer_Release(&vb);
        PyErr_SetString(PyExc_ValueError, "bias length must divide the length of u");
        return NULL;
    }
    const double *u = v[0].buf, *fb = v[1].buf, *b = vb.buf;
    double *out = v[2].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < n; row += k)
        membrane_row(u + row, fb + row, b, out + row, k, eta, cu, cdu);
    Py_END_ALLOW_THREADS
    release(v, 3);
    PyBuffer_Release(&vb);
    Py_RETURN_NONE;
}

/* --- readout ------------------------------------------------------------------------------ */

/* Sums of rows picked by the spikes: y[c] = (0 + a_0 m[i_0, c]) + a_1 m[i_1, c] + ..., over the
 * listed (index, value) pairs in their order, a multiply then an add (no FMA), then + add[c] when
 * add is not NULL; for the columns c0 <= c < c1 of rows of length ld.  The AVX2 code holds 32
 * columns in registers while it runs down the list, so y is written once; every element is
 * rounded as the scalar loop rounds it. */
#ifdef VECMATH_X86
__attribute__((target("avx2"))) static void rows_sum_avx2(const double *val, const Py_ssize_t *idx,
                                                          Py_ssize_t nnz, const double *m,
                                                          Py_ssize_t ld, Py_ssize_t c0,
                                                          Py_ssize_t c1, const double *add,
                                                          double *y)
{
    Py_ssize_t c = c0;
    for (; c + 32 <= c1; c += 32) {
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
                a7 = a0;
        for (Py_ssize_t q = 0; q < nnz; q++) {
            const double *r = m + idx[q] * ld + c;
            __m256d v = _mm256_set1_pd(val[q]);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(v, _mm256_loadu_pd(r)));
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(v, _mm256_loadu_pd(r + 4)));
            a2 = _mm256_add_pd(a2, _mm256_mul_pd(v, _mm256_loadu_pd(r + 8)));
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(v, _mm256_loadu_pd(r + 12)));
            a4 = _mm256_add_pd(a4, _mm256_mul_pd(v, _mm256_loadu_pd(r + 16)));
            a5 = _mm256_add_pd(a5, _mm256_mul_pd(v, _mm256_loadu_pd(r + 20)));
            a6 = _mm256_add_pd(a6, _mm256_mul_pd(v, _mm256_loadu_pd(r + 24)));
            a7 = _mm256_add_pd(a7, _mm256_mul_pd(v, _mm256_loadu_pd(r + 28)));
        }
        if (add != NULL) {
            const double *d = add + c;
            a0 = _mm256_add_pd(a0, _mm256_loadu_pd(d));
            a1 = _mm256_add_pd(a1, _mm256_loadu_pd(d + 4));
            a2 = _mm256_add_pd(a2, _mm256_loadu_pd(d + 8));
            a3 = _mm256_add_pd(a3, _mm256_loadu_pd(d + 12));
            a4 = _mm256_add_pd(a4, _mm256_loadu_pd(d + 16));
            a5 = _mm256_add_pd(a5, _mm256_loadu_pd(d + 20));
            a6 = _mm256_add_pd(a6, _mm256_loadu_pd(d + 24));
            a7 = _mm256_add_pd(a7, _mm256_loadu_pd(d + 28));
        }
        _mm256_storeu_pd(y + c, a0);
        _mm256_storeu_pd(y + c + 4, a1);
        _mm256_storeu_pd(y + c + 8, a2);
        _mm256_storeu_pd(y + c + 12, a3);
        _mm256_storeu_pd(y + c + 16, a4);
        _mm256_storeu_pd(y + c + 20, a5);
        _mm256_storeu_pd(y + c + 24, a6);
        _mm256_storeu_pd(y + c + 28, a7);
    }
    for (; c + 4 <= c1; c += 4) {
        __m256d a0 = _mm256_setzero_pd();
        for (Py_ssize_t q = 0; q < nnz; q++)
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(_mm256_set1_pd(val[q]),
                                                 _mm256_loadu_pd(m + idx[q] * ld + c)));
        if (add != NULL)
            a0 = _mm256_add_pd(a0, _mm256_loadu_pd(add + c));
        _mm256_storeu_pd(y + c, a0);
    }
    for (; c < c1; c++) {
        double t = 0.0;
        for (Py_ssize_t q = 0; q < nnz; q++)
            t += val[q] * m[idx[q] * ld + c];
        y[c] = add != NULL ? t + add[c] : t;
    }
}
#endif

#ifdef VECMATH_X86
/* rows_sum_avx2 with 512-bit registers: 32 columns in four, the same operations per element. */
__attribute__((target("avx2,avx512f"))) static void rows_sum_avx512(
    const double *val, const Py_ssize_t *idx, Py_ssize_t nnz, const double *m, Py_ssize_t ld,
    Py_ssize_t c0, Py_ssize_t c1, const double *add, double *y)
{
    Py_ssize_t c = c0;
    for (; c + 32 <= c1; c += 32) {
        __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
        for (Py_ssize_t q = 0; q < nnz; q++) {
            const double *r = m + idx[q] * ld + c;
            __m512d v = _mm512_set1_pd(val[q]);
            a0 = _mm512_add_pd(a0, _mm512_mul_pd(v, _mm512_loadu_pd(r)));
            a1 = _mm512_add_pd(a1, _mm512_mul_pd(v, _mm512_loadu_pd(r + 8)));
            a2 = _mm512_add_pd(a2, _mm512_mul_pd(v, _mm512_loadu_pd(r + 16)));
            a3 = _mm512_add_pd(a3, _mm512_mul_pd(v, _mm512_loadu_pd(r + 24)));
        }
        if (add != NULL) {
            const double *d = add + c;
            a0 = _mm512_add_pd(a0, _mm512_loadu_pd(d));
            a1 = _mm512_add_pd(a1, _mm512_loadu_pd(d + 8));
            a2 = _mm512_add_pd(a2, _mm512_loadu_pd(d + 16));
            a3 = _mm512_add_pd(a3, _mm512_loadu_pd(d + 24));
        }
        _mm512_storeu_pd(y + c, a0);
        _mm512_storeu_pd(y + c + 8, a1);
        _mm512_storeu_pd(y + c + 16, a2);
        _mm512_storeu_pd(y + c + 24, a3);
    }
    if (c < c1) /* fewer than 32 columns left: the AVX2 code's narrower loops */
        rows_sum_avx2(val, idx, nnz, m, ld, c, c1, add, y);
}
#endif

static void rows_sum(const double *val, const Py_ssize_t *idx, Py_ssize_t nnz, const double *m,
                     Py_ssize_t ld, Py_ssize_t c0, Py_ssize_t c1, const double *add, double *y,
                     int lanes)
{
#ifdef VECMATH_X86
    if (lanes == 8) {
        rows_sum_avx512(val, idx, nnz, m, ld, c0, c1, add, y);
        return;
    }
    if (lanes) {
        rows_sum_avx2(val, idx, nnz, m, ld, c0, c1, add, y);
        return;
    }
#endif
    for (Py_ssize_t c = c0; c < c1; c++) {
        double t = 0.0;
        for (Py_ssize_t q = 0; q < nnz; q++)
            t += val[q] * m[idx[q] * ld + c];
        y[c] = add != NULL ? t + add[c] : t;
    }
}

/* The nonzero entries of z[0 .. k) as (index, value) pairs, in order; returns how many. */
static Py_ssize_t nonzeros(const double *z, Py_ssize_t k, Py_ssize_t *idx, double *val)
{
    Py_ssize_t nnz = 0;
    for (Py_ssize_t j = 0; j < k; j++)
        if (z[j] != 0.0) {
            idx[nnz] = j;
            val[nnz++] = z[j];
        }
    return nnz;
}

#define READOUT_GROUP 16 /* rows sharing one pass over the columns (the block stays in L2) */
#define READOUT_COLUMNS 64

PyDoc_STRVAR(readout_doc,
"readout(z, phi_t, out)\n\n"
"out = z @ phi_t, summing over the nonzero entries of z only (row n: sum over k of\n"
"z[n, k] * phi_t[k], in order of k, from 0).  z (N, K), phi_t (K, D), out (N, D):\n"
"C-contiguous float64.  A row's numbers do not depend on the other rows.");

static PyObject *readout(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 3, "readout(z, phi_t, out)") < 0)
        return NULL;
    Py_buffer v[3];
    PyObject *const contiguous[2] = {args[0], args[2]};
    Py_ssize_t ld = get_rows(args[1], &v[1], "readout's phi_t", 0);
    if (ld < 0)
        return NULL;
    Py_buffer vc[2];
    if (get_float64(contiguous, vc, 2, 1) < 0) {
        PyBuffer_Release(&v[1]);
        return NULL;
    }
    v[0] = vc[0];
    v[2] = vc[1];
    if (v[0].ndim != 2 || v[2].ndim != 2 || v[0].shape[1] != v[1].shape[0]
            || v[2].shape[0] != v[0].shape[0] || v[2].shape[1] != v[1].shape[1]) {
        release(v, 3);
        PyErr_SetString(PyExc_ValueError, "readout needs z (N, K), phi_t (K, D) and out (N, D)");
        return NULL;
    }
    Py_ssize_t n = v[0].shape[0], k = v[0].shape[1], d = v[1].shape[1];
    const double *z = v[0].buf, *phi_t = v[1].buf;
    double *out = v[2].buf;
    int lanes = own_simd_lanes, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    /* rows in groups: their nonzero lists, then the columns a slice at a time for every row
     * of the group, so that slice of phi_t is read from memory once per group */
    Py_ssize_t *idx = malloc((size_t)(READOUT_GROUP * (k ? k : 1)) * sizeof(Py_ssize_t));
    double *val = malloc((size_t)(READOUT_GROUP * (k ? k : 1)) * sizeof(double));
    if (idx == NULL || val == NULL) {
        failed = 1;
    } else {
        for (Py_ssize_t g = 0; g < n; g += READOUT_GROUP) {
            Py_ssize_t rows = n - g < READOUT_GROUP ? n - g : READOUT_GROUP, nnz[READOUT_GROUP];
            for (Py_ssize_t r = 0; r < rows; r++)
                nnz[r] = nonzeros(z + (g + r) * k, k, idx + r * k, val + r * k);
            for (Py_ssize_t c0 = 0; c0 < d; c0 += READOUT_COLUMNS) {
                Py_ssize_t c1 = d - c0 < READOUT_COLUMNS ? d : c0 + READOUT_COLUMNS;
                for (Py_ssize_t r = 0; r < rows; r++)
                    rows_sum(val + r * k, idx + r * k, nnz[r], phi_t, ld, c0, c1, NULL,
                             out + (g + r) * d, lanes);
            }
        }
    }
    free(idx);
    free(val);
    Py_END_ALLOW_THREADS
    release(v, 3);
    if (failed)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* --- step: one inference step of a row block, fused ---------------------------------------- */

/* A buffer argument that may be None (then view->buf is NULL); C-contiguous, format `fmt`. */
static int get_optional(PyObject *arg, Py_buffer *view, const char *fmt, int writable)
{
    if (arg == Py_None) {
        memset(view, 0, sizeof(*view));
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(arg, view, flags) < 0)
        return -1;
    if (view->itemsize != 8 || strchr(fmt, view->format[0]) == NULL || view->format[1] != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "step: a C-contiguous %s buffer was expected",
                     fmt[0] == 'd' ? "float64" : "int64");
        return -1;
    }
    return 0;
}

/* Release the views v[0 .. n) that hold a buffer (None gave buf == NULL). */
static void release_held(Py_buffer *v, int n)
{
    for (int j = 0; j < n; j++)
        if (v[j].buf != NULL)
            PyBuffer_Release(&v[j]);
}

/* Elements of a buffer (0 for None). */
static Py_ssize_t elements(const Py_buffer *v)
{
    return v->buf == NULL ? 0 : v->len / 8;
}

/* 2^31: the folded MSE is used when its rounding bound is below 2^-31 (4.7e-10) of its value,
 * under the contract's 1e-9 relative tolerance on the MSE; else the read-out is summed. */
#define FOLD_MARGIN 2147483648.0

#define STEP_GROUP 64   /* rows whose feedback shares one pass over the columns of W */
#define STEP_COLUMNS 32 /* columns per pass: rows_sum_avx2 holds 32 sums in registers */

/* The squared error ||x - Phi z||^2 of one row from the folded quantities: ||x||^2 - 2 z.(Phi^T x)
 * + z.(Phi^T Phi) z over the nonzero counts (nnz^2 / 2 work instead of nnz D).  Each dot product
 * of length D behind xsq, xphi and gram errs by at most gamma_D times the product of the norms
 * (|G_ij| <= |phi_i||phi_j|), the sums here by gamma_(2 nnz + 2) of their absolute terms, so
 * with a = sum_j z_j |phi_j| the result errs by at most (D + 2 nnz + 8) 2^-53 (|x| + a)^2;
 * returns -1 when that bound exceeds its value / FOLD_MARGIN. */
static double folded_sq_error(double xsq, const double *xphi, const double *gram,
                              const double *norms, Py_ssize_t ld, Py_ssize_t d,
                              const Py_ssize_t *nz, const double *zv, Py_ssize_t nnz)
{
    double cross = 0.0, a = 0.0, quad = 0.0;
    for (Py_ssize_t i = 0; i < nnz; i++) {
        const double *g = gram + nz[i] * ld;
        double inner = 0.0;
        for (Py_ssize_t j = i + 1; j < nnz; j++)
            inner += zv[j] * g[nz[j]];
        quad += zv[i] * (zv[i] * g[nz[i]] + 2.0 * inner);
        cross += zv[i] * xphi[nz[i]];
        a += zv[i] * norms[nz[i]];
    }
    double e = (xsq - 2.0 * cross) + quad, scale = sqrt(xsq) + a;
    double bound = scale * scale * ((double)d + 2.0 * (double)nnz + 8.0) * 0x1p-53;
    return e >= bound * FOLD_MARGIN ? e : -1.0;
}

PyDoc_STRVAR(step_doc,
"step(u, xi, u_next, z, rate, drive, w_rows, xphi, gram, norms, xsq, phi_t, x, recon, bias,\n"
"     mse, zeros, mean_rate, dense, seed, index0, t, eta, clamp_u, clamp_du, max_sparse)\n"
"     -> number of dense rows\n\n"
"One inference step (design §1.1) of a row block of n inputs (rows independent):\n"
"the uniforms (xi (n, K), or the shared streams (seed, index0 + row) at step t when xi is\n"
"None), rate = e^u and the counts z (n, K) of recipe.h, and for a row with at most\n"
"max_sparse nonzero counts the event-driven feedback drive + sum_j z_j w_rows[j] and\n"
"u_next = membrane update; its squared error from the folded quantities xphi = Phi^T x\n"
"(n, K), gram = Phi^T Phi (K, K), norms = |phi_j| (K,), xsq = |x|^2 (n,) (or from the\n"
"read-out when they round too coarsely, or when gram is None), mse (n,) = that / D; the\n"
"read-out into recon\n"
"(n, D) unless None.  zeros (n,) and mean_rate (n,) for every row.  The indices of the\n"
"rows with more nonzero counts (or all when w_rows is None) go to dense (n,) int64, in\n"
"order, for the caller's dense path; their u_next, mse and recon are not written.");

enum { S_U, S_XI, S_UNEXT, S_Z, S_RATE, S_DRIVE, S_W, S_XPHI, S_GRAM, S_NORMS, S_XSQ, S_PHIT,
       S_X, S_RECON, S_BIAS, S_MSE, S_ZEROS, S_MEAN, S_DENSE, S_NBUF };

static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const sig = "step(u, xi, u_next, z, rate, drive, w_rows, xphi, gram, norms, "
                                   "xsq, phi_t, x, recon, bias, mse, zeros, mean_rate, dense, seed, "
                                   "index0, t, eta, clamp_u, clamp_du, max_sparse)";
    if (check_nargs(nargs, S_NBUF + 7, sig) < 0)
        return NULL;
    unsigned long long seed = PyLong_AsUnsignedLongLong(args[S_NBUF]),
                       index0 = PyLong_AsUnsignedLongLong(args[S_NBUF + 1]),
                       t = PyLong_AsUnsignedLongLong(args[S_NBUF + 2]);
    double eta = PyFloat_AsDouble(args[S_NBUF + 3]), cu = PyFloat_AsDouble(args[S_NBUF + 4]),
           cdu = PyFloat_AsDouble(args[S_NBUF + 5]);
    Py_ssize_t max_sparse = PyLong_AsSsize_t(args[S_NBUF + 6]);
    if (PyErr_Occurred())
        return NULL;
    static const int writable[S_NBUF] = {[S_UNEXT] = 1, [S_Z] = 1, [S_RATE] = 1, [S_RECON] = 1,
                                         [S_MSE] = 1, [S_ZEROS] = 1, [S_MEAN] = 1, [S_DENSE] = 1};
    static const int optional[S_NBUF] = {[S_XI] = 1, [S_DRIVE] = 1, [S_W] = 1, [S_XPHI] = 1,
                                         [S_GRAM] = 1, [S_NORMS] = 1, [S_XSQ] = 1, [S_RECON] = 1};
    Py_buffer v[S_NBUF];
    Py_ssize_t ld_w = 0, ld_phi = 0, ld_gram = 0;
    for (int i = 0; i < S_NBUF; i++) {
        int got;
        if (!optional[i] && args[i] == Py_None)
            got = -1;
        else if (i == S_W)
            got = (ld_w = get_rows(args[i], &v[i], "step's w_rows", 1)) < 0 ? -1 : 0;
        else if (i == S_GRAM)
            got = (ld_gram = get_rows(args[i], &v[i], "step's gram", 1)) < 0 ? -1 : 0;
        else if (i == S_PHIT)
            got = (ld_phi = get_rows(args[i], &v[i], "step's phi_t", 0)) < 0 ? -1 : 0;
        else
            got = get_optional(args[i], &v[i], i == S_DENSE ? "lq" : "d", writable[i]);
        if (got < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "step: argument %d may not be None", i);
            release_held(v, i);
            return NULL;
        }
    }
    Py_ssize_t k = elements(&v[S_BIAS]), n = k ? elements(&v[S_U]) / k : 0,
               d = n ? elements(&v[S_X]) / n : 0, nk = n * k;
    int sparse_ok = v[S_W].buf != NULL;
    int bad = k == 0 || elements(&v[S_U]) != nk || elements(&v[S_UNEXT]) != nk
              || elements(&v[S_Z]) != nk || elements(&v[S_RATE]) != nk
              || elements(&v[S_X]) != n * d || v[S_PHIT].shape[0] != k
              || v[S_PHIT].shape[1] != d
              || elements(&v[S_MSE]) != n || elements(&v[S_ZEROS]) != n
              || elements(&v[S_MEAN]) != n || elements(&v[S_DENSE]) != n
              || (v[S_XI].buf != NULL && elements(&v[S_XI]) != nk)
              || (v[S_RECON].buf != NULL && elements(&v[S_RECON]) != n * d);
    int folded_mse = v[S_GRAM].buf != NULL;
    if (sparse_ok)
        bad = bad || v[S_W].shape[0] != k || v[S_W].shape[1] != k
              || elements(&v[S_DRIVE]) != nk;
    if (folded_mse)
        bad = bad || elements(&v[S_XPHI]) != nk || v[S_GRAM].shape[0] != k
              || v[S_GRAM].shape[1] != k
              || elements(&v[S_NORMS]) != k || elements(&v[S_XSQ]) != n;
    if (bad) {
        release_held(v, S_NBUF);
        PyErr_SetString(PyExc_ValueError, "step: buffer sizes do not match (n, K), (K, K), (n, D)");
        return NULL;
    }
    uintptr_t u0 = (uintptr_t)v[S_U].buf, un0 = (uintptr_t)v[S_UNEXT].buf;
    if (sparse_ok && u0 < un0 + (uintptr_t)v[S_UNEXT].len && un0 < u0 + (uintptr_t)v[S_U].len) {
        /* u_next holds the feedback before the membrane reads u */
        release_held(v, S_NBUF);
        PyErr_SetString(PyExc_ValueError, "step: u_next must not overlap u");
        return NULL;
    }
#define B(i) ((double *)v[i].buf)
    const double *xi = B(S_XI), *w = B(S_W), *gram = B(S_GRAM), *norms = B(S_NORMS),
                 *phi_t = B(S_PHIT), *bias = B(S_BIAS);
    int64_t *dense = (int64_t *)v[S_DENSE].buf;
    Py_ssize_t n_dense = 0;
    int lanes = own_simd_lanes, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    /* per call: uniforms and 2 scratch for spikes (k each), a read-out (d), and per row of a
     * group its nonzero list (index, count: 2 k) */
    Py_ssize_t group = n < STEP_GROUP ? n : STEP_GROUP;
    double *buf = malloc(((size_t)3 * (size_t)k + (size_t)d + (size_t)(2 * group * k) + 8)
                         * sizeof(double));
    if (buf == NULL) {
        failed = 1;
    } else {
        double *ubuf = buf, *scratch = buf + k, *rbuf = buf + 3 * k, *nz_val = rbuf + d;
        Py_ssize_t *nz = (Py_ssize_t *)(nz_val + group * k);
        Py_ssize_t sel[STEP_GROUP], nnz[STEP_GROUP];
        for (Py_ssize_t g0 = 0; g0 < n; g0 += group) {
            Py_ssize_t rows = n - g0 < group ? n - g0 : group, n_sel = 0;
            /* 1. per row: the counts, their nonzero list, the rate's mean and zeros */
            for (Py_ssize_t r = 0; r < rows; r++) {
                Py_ssize_t i = g0 + r;
                const double *ur = B(S_U) + i * k, *xr;
                double *z = B(S_Z) + i * k, *rate = B(S_RATE) + i * k;
                if (xi != NULL) {
                    xr = xi + i * k;
                } else {
                    philox_uniforms(seed, index0 + (uint64_t)i, (uint64_t)t * (uint64_t)k, k,
                                    ubuf);
                    xr = ubuf;
                }
                Py_ssize_t fired = 0;
                for (Py_ssize_t c0 = 0; c0 < k; c0 += CHUNK) {
                    Py_ssize_t m = k - c0 < CHUNK ? k - c0 : CHUNK;
                    fired += spikes_span(ur + c0, xr + c0, rate + c0, z + c0, m, scratch,
                                         nz + r * k + fired, nz_val + r * k + fired, c0);
                }
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0; /* four partial sums, fixed order */
                Py_ssize_t j = 0;
                for (; j + 4 <= k; j += 4) {
                    s0 += rate[j];
                    s1 += rate[j + 1];
                    s2 += rate[j + 2];
                    s3 += rate[j + 3];
                }
                for (; j < k; j++)
                    s0 += rate[j];
                B(S_MEAN)[i] = ((s0 + s1) + (s2 + s3)) / (double)k;
                B(S_ZEROS)[i] = (double)(k - fired) / (double)k;
                if (!sparse_ok || fired > max_sparse) {
                    dense[n_dense++] = i;
                    continue;
                }
                sel[n_sel] = r;
                nnz[n_sel++] = fired;
            }
            /* 2. the feedback of the group's event-driven rows: drive + the rows of W of the
             * fired neurons in order of k (the sums of neurons.kernels.readout, then + drive),
             * written into u_next; and the read-out.  A slice of columns at a time for every
             * row, so that slice of W (of phi_t) is read from memory once per group. */
            for (Py_ssize_t c0 = 0; c0 < k; c0 += STEP_COLUMNS) {
                Py_ssize_t c1 = k - c0 < STEP_COLUMNS ? k : c0 + STEP_COLUMNS;
                for (Py_ssize_t q = 0; q < n_sel; q++) {
                    Py_ssize_t r = sel[q], i = g0 + r;
                    rows_sum(nz_val + r * k, nz + r * k, nnz[q], w, ld_w, c0, c1,
                             B(S_DRIVE) + i * k, B(S_UNEXT) + i * k, lanes);
                }
            }
            if (B(S_RECON) != NULL)
                for (Py_ssize_t c0 = 0; c0 < d; c0 += STEP_COLUMNS) {
                    Py_ssize_t c1 = d - c0 < STEP_COLUMNS ? d : c0 + STEP_COLUMNS;
                    for (Py_ssize_t q = 0; q < n_sel; q++) {
                        Py_ssize_t r = sel[q], i = g0 + r;
                        rows_sum(nz_val + r * k, nz + r * k, nnz[q], phi_t, ld_phi, c0, c1, NULL,
                                 B(S_RECON) + i * d, lanes);
                    }
                }
            /* 3. per event-driven row: the membrane (in place over its feedback), the MSE */
            for (Py_ssize_t q = 0; q < n_sel; q++) {
                Py_ssize_t r = sel[q], i = g0 + r;
                const Py_ssize_t *rnz = nz + r * k;
                const double *rval = nz_val + r * k;
                double *un = B(S_UNEXT) + i * k;
                membrane_row(B(S_U) + i * k, un, bias, un, k, eta, cu, cdu);
                double e = folded_mse ? folded_sq_error(B(S_XSQ)[i], B(S_XPHI) + i * k, gram,
                                                        norms, ld_gram, d, rnz, rval, nnz[q]) : -1.0;
                if (e < 0.0) { /* rounding too coarse: sum the residual of the read-out */
                    const double *rr = rbuf;
                    if (B(S_RECON) != NULL)
                        rr = B(S_RECON) + i * d;
                    else
                        rows_sum(rval, rnz, nnz[q], phi_t, ld_phi, 0, d, NULL, rbuf, lanes);
                    const double *xrow = B(S_X) + i * d;
                    e = 0.0;
                    for (Py_ssize_t c = 0; c < d; c++)
                        e += (xrow[c] - rr[c]) * (xrow[c] - rr[c]);
                }
                B(S_MSE)[i] = e / (double)d;
            }
        }
        free(buf);
    }
    Py_END_ALLOW_THREADS
#undef B
    release_held(v, S_NBUF);
    if (failed)
        return PyErr_NoMemory();
    return PyLong_FromSsize_t(n_dense);
}

/* --- uniforms ----------------------------------------------------------------------------- */

PyDoc_STRVAR(uniforms_doc,
"uniforms(out, seed, first_index, first_step)\n\n"
"out (steps, N, K) C-contiguous float64 <- the shared uniforms xi[t, n, k] of steps\n"
"first_step .. first_step + steps - 1 for the samples first_index .. first_index + N - 1,\n"
"numpy's Generator(Philox(key=[seed, index])).random() stream drawn in (t, k) order.");

static PyObject *uniforms(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 4, "uniforms(out, seed, first_index, first_step)") < 0)
        return NULL;
    unsigned long long seed = PyLong_AsUnsignedLongLong(args[1]),
                       index0 = PyLong_AsUnsignedLongLong(args[2]),
                       step0 = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer v;
    if (get_float64(args, &v, 1, 1) < 0)
        return NULL;
    if (v.ndim != 3) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "uniforms needs out of shape (steps, N, K)");
        return NULL;
    }
    Py_ssize_t steps = v.shape[0], n = v.shape[1], k = v.shape[2];
    double *out = v.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < steps; s++)
        for (Py_ssize_t i = 0; i < n; i++)
            philox_uniforms(seed, index0 + (uint64_t)i, (step0 + (uint64_t)s) * (uint64_t)k, k,
                            out + (s * n + i) * k);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

/* --- vector math switch ------------------------------------------------------------------- */

/* The lanes a switch f(lanes=None) asks for: 0, 4 or 8 (True: 8, False: 0), -1 when None or
 * absent; -2 with an error set for a bad call. */
static int lanes_arg(PyObject *const *args, Py_ssize_t nargs, const char *name)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s(lanes=None) takes at most 1 argument", name);
        return -2;
    }
    if (nargs == 0 || args[0] == Py_None)
        return -1;
    if (PyBool_Check(args[0]))
        return args[0] == Py_True ? 8 : 0;
    long v = PyLong_AsLong(args[0]);
    if (v == -1 && PyErr_Occurred())
        return -2;
    if (v != 0 && v != 4 && v != 8) {
        PyErr_Format(PyExc_ValueError, "%s: lanes must be 0, 4 or 8, got %ld", name, v);
        return -2;
    }
    return (int)v;
}

PyDoc_STRVAR(vector_math_doc,
"vector_math(lanes=None) -> int\n\n"
"How many doubles each libmvec call of spikes and membrane computes: 8 (AVX-512), 4 (AVX2)\n"
"or 0 (scalar libm).  lanes asks for at most that many (True: the widest this machine has,\n"
"False or 0: scalar libm).  Returns the setting in force.");

static PyObject *vector_math(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int lanes = lanes_arg(args, nargs, "vector_math");
    if (lanes == -2)
        return NULL;
    if (lanes >= 0)
        vecmath_use(lanes);
    return PyLong_FromLong(vecmath_lanes);
}

PyDoc_STRVAR(own_simd_doc,
"own_simd(lanes=None) -> int\n\n"
"Which of the kernels' own loops (the inverse CDF's scan and search, the membrane's passes,\n"
"the event-driven sums) run: 8 (AVX2, and AVX-512 for the event-driven sums), 4 (AVX2) or\n"
"0 (scalar), each the same numbers as the scalar code bit for bit (a switch for tests).\n"
"lanes asks for at most that many (True: the widest this CPU runs, False: scalar).\n"
"Returns the setting in force.");

/* The widest own loops this CPU runs, at most `lanes`. */
static int own_lanes(int lanes)
{
    if (lanes <= 0 || !cpu_has_avx2())
        return 0;
    return lanes >= 8 && cpu_has_avx512() ? 8 : 4;
}

static PyObject *own_simd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int lanes = lanes_arg(args, nargs, "own_simd");
    if (lanes == -2)
        return NULL;
    if (lanes >= 0)
        own_simd_lanes = own_lanes(lanes);
    return PyLong_FromLong(own_simd_lanes);
}

static PyMethodDef methods[] = {
    {"spikes", (PyCFunction)(void (*)(void))spikes, METH_FASTCALL, spikes_doc},
    {"membrane", (PyCFunction)(void (*)(void))membrane, METH_FASTCALL, membrane_doc},
    {"readout", (PyCFunction)(void (*)(void))readout, METH_FASTCALL, readout_doc},
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL, step_doc},
    {"uniforms", (PyCFunction)(void (*)(void))uniforms, METH_FASTCALL, uniforms_doc},
    {"vector_math", (PyCFunction)(void (*)(void))vector_math, METH_FASTCALL, vector_math_doc},
    {"own_simd", (PyCFunction)(void (*)(void))own_simd, METH_FASTCALL, own_simd_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled kernels of the reference simulator's step (see neurons/kernels.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    vecmath_use(8);
    own_simd_lanes = own_lanes(8);
    return PyModule_Create(&module);
}
