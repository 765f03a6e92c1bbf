/* exp and log1p over arrays: glibc's vector math library (libmvec) where it runs, libm otherwise.
 *
 * libmvec's variants compute four (AVX2) or eight (AVX-512) doubles at a time to within
 * glibc's documented error bounds (measured: within 3 ulp of the correctly rounded exp), not
 * bit for bit like scalar libm, nor like each other (their log1p differ in the last bit on
 * some inputs).  Design §2.1 allows exactly that: backends agree on the counts except where
 * ξ lies within rounding of a CDF step.  They are looked up at run time (dlopen), so a
 * machine without AVX2 or with an older glibc (log1p came in 2.35) runs the scalar calls.
 * The widest the CPU runs is taken; `vecmath_use(4)` keeps to AVX2 and `vecmath_use(0)`
 * forces the scalar calls (which equal numpy's where numpy calls libm, i.e. without AVX-512).
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
typedef __m512d (*vec8_fn)(__m512d);
#else
typedef void *vec4_fn;
typedef void *vec8_fn;
#endif
static vec4_fn vexp4, vlog1p4;
static vec8_fn vexp8, vlog1p8;

static int vecmath_lanes; /* doubles per libmvec call in use: 0 (scalar libm), 4 or 8 */

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

/* Whether this CPU runs AVX-512 (F) code. */
static int cpu_has_avx512(void)
{
#ifdef VECMATH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* Find libmvec's exp and log1p; returns the widest lanes (8, 4) both exist for, else 0. */
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
            if (cpu_has_avx512()) {
                vexp8 = (vec8_fn)dlsym(lib, "_ZGVeN8v_exp");
                vlog1p8 = (vec8_fn)dlsym(lib, "_ZGVeN8v_log1p");
            }
        }
    }
    if (vexp4 == NULL || vlog1p4 == NULL)
        return 0;
    return vexp8 != NULL && vlog1p8 != NULL ? 8 : 4;
#else
    return 0;
#endif
}

/* Use libmvec with at most `lanes` doubles per call (0: libm; 4: AVX2; 8 or more: the widest
 * available); returns the lanes now in force. */
static int vecmath_use(int lanes)
{
    int most = vecmath_available();
    vecmath_lanes = lanes <= 0 || most == 0 ? 0 : (lanes < 8 || most == 4 ? 4 : 8);
    return vecmath_lanes;
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

__attribute__((target("avx2,avx512f"))) static void map8(vec8_fn f, double *x, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(x + i, f(_mm512_loadu_pd(x + i)));
    if (i < n) { /* as in map4 */
        double pad[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        memcpy(pad, x + i, (size_t)(n - i) * sizeof(double));
        _mm512_storeu_pd(pad, f(_mm512_loadu_pd(pad)));
        memcpy(x + i, pad, (size_t)(n - i) * sizeof(double));
    }
}
#endif

/* x[i] = f(x[i]) for i < n, by vf8 or vf4 when libmvec is in use. */
static void map_math(vec4_fn vf4, vec8_fn vf8, double (*f)(double), double *x, Py_ssize_t n)
{
#ifdef VECMATH_X86
    if (vecmath_lanes == 8) {
        map8(vf8, x, n);
        return;
    }
    if (vecmath_lanes == 4) {
        map4(vf4, x, n);
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < n; i++)
        x[i] = f(x[i]);
}

#define map_exp(x, n) map_math(vexp4, vexp8, exp, (x), (n))
#define map_log1p(x, n) map_math(vlog1p4, vlog1p8, log1p, (x), (n))

#endif
