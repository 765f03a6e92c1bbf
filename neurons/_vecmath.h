/* exp and log1p over arrays: glibc's vector math library (libmvec) where it runs, libm otherwise.
 *
 * libmvec's AVX2 variants compute four doubles at a time to within glibc's
 * documented error bounds (measured: within 3 ulp of the correctly rounded exp),
 * not bit for bit like scalar libm.  Design §2.1 allows exactly that: backends agree on the
 * counts except where ξ lies within rounding of a CDF step.  They are looked
 * up at run time (dlopen), so a machine without AVX2 or with an older glibc
 * (log1p came in 2.35) runs the scalar calls, and `vecmath_use(0)` forces the
 * scalar calls (which equal numpy's where numpy calls libm, i.e. without AVX-512).
 */
#ifndef IPVAE_VECMATH_H
#define IPVAE_VECMATH_H

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define VECMATH_X86 1
#include <dlfcn.h>
#include <immintrin.h>
typedef __m256d (*vec4_fn)(__m256d);
#else
typedef void *vec4_fn;
#endif
static vec4_fn vexp4, vlog1p4;

static int vecmath_on; /* 1: libmvec in use */

/* Whether this CPU runs AVX2 code (the libmvec variants, and the kernels' own loops). */
static int cpu_has_avx2(void)
{
#ifdef VECMATH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* Find libmvec's AVX2 exp and log1p; returns whether they can be used. */
static int vecmath_available(void)
{
#ifdef VECMATH_X86
    static int tried;
    if (!tried) {
        tried = 1;
        void *lib = cpu_has_avx2() ? dlopen("libmvec.so.1", RTLD_NOW) : NULL;
        if (lib != NULL) {
            vexp4 = (vec4_fn)dlsym(lib, "_ZGVdN4v_exp");
            vlog1p4 = (vec4_fn)dlsym(lib, "_ZGVdN4v_log1p");
        }
    }
    return vexp4 != NULL && vlog1p4 != NULL;
#else
    return 0;
#endif
}

/* Use libmvec (on != 0) when available, else libm; returns the setting now in force. */
static int vecmath_use(int on)
{
    vecmath_on = on && vecmath_available();
    return vecmath_on;
}

#ifdef VECMATH_X86
__attribute__((target("avx2"))) static void map4(vec4_fn f, double *x, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(x + i, f(_mm256_loadu_pd(x + i)));
    if (i < n) { /* the tail, padded: each lane's result depends on that lane alone */
        double pad[4] = {0.0, 0.0, 0.0, 0.0};
        memcpy(pad, x + i, (size_t)(n - i) * sizeof(double));
        _mm256_storeu_pd(pad, f(_mm256_loadu_pd(pad)));
        memcpy(x + i, pad, (size_t)(n - i) * sizeof(double));
    }
}
#endif

/* x[i] = f(x[i]) for i < n, four at a time by vf when libmvec is in use. */
static void map_math(vec4_fn vf, double (*f)(double), double *x, Py_ssize_t n)
{
#ifdef VECMATH_X86
    if (vecmath_on) {
        map4(vf, x, n);
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < n; i++)
        x[i] = f(x[i]);
}

#define map_exp(x, n) map_math(vexp4, exp, (x), (n))
#define map_log1p(x, n) map_math(vlog1p4, log1p, (x), (n))

#endif
