/* Compiled fixed-point latent step (neurons/fixed.py, design §2.4).
 *
 * - `counts`: neurons.fixed.counts_numpy written as one loop per neuron: the rate from the
 *   e^u table, the split into parts of at most SPLIT_RATE spikes per step, the counter-based
 *   uniforms (SplitMix64's finaliser) and the Q.38 inverse CDF;
 * - `step`: the emulator's whole step of a row block fused, one pass per row: those counts
 *   saturated to the payload (FixedLatent.fire), the recurrent Dense over the nonzero
 *   counts only (neurons.fixed.dense_t), the self-term and the membrane step with its
 *   saturation (FixedLatent.integrate).
 *
 * Integers only (int64, int32 where a bound proves it exact, wrapping uint64 for the
 * generator), so it equals the numpy code bit for bit on any CPU and at any vector width
 * (tests/test_fixed_point.py checks it).  Floor shifts of negative values are written out,
 * not left to the compiler's `>>`.  Releases the GIL, so row blocks may run in threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define U_FRAC 12
#define R_FRAC 20
#define P_FRAC 38
#define ETA_FRAC 12
#define LUT_STEP_BITS 6
#define EXP_LO (-9)
#define EXP_HI 11
#define SOFTPLUS_LO (-16)
#define SOFTPLUS_HI 20
#define U_FLOOR (-8) /* the recipe's floor on u (neurons/recipe.h), in units of u */
#define STATE_BITS 24
#define SPLIT_RATE 16
#define SUBDRAW_STRIDE 4096
#define ICDF_TERMS 126

#define PAYLOAD_MIN (-((int64_t)1 << (STATE_BITS - 1)))
#define PAYLOAD_MAX (((int64_t)1 << (STATE_BITS - 1)) - 1)

/* x86-64 with GCC or clang on glibc: the fused row step is also compiled for AVX2 and the
 * loader picks the clone this CPU runs (integers: every clone computes the same numbers). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(__clang__)
#define WIDE __attribute__((target_clones("avx2", "default")))
#else
#define WIDE
#endif

static const uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL;

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static inline int64_t uniform(uint64_t key, uint64_t counter)
{
    return (int64_t)(mix(key + counter * GOLDEN) >> 32);
}

/* ⌊x / 2^sh⌋ without a branch: for x < 0, ~x >= 0 and ⌊x / 2^sh⌋ = ~(~x >> sh). */
static inline int64_t floor_shift(int64_t x, int sh)
{
    int64_t m = -(int64_t)(x < 0);
    return m ^ ((m ^ x) >> sh);
}

/* x·2^e for e > 0, else ⌊x·2^e⌋ (numpy's `x << e` / `x >> -e` on int64). */
static inline int64_t shift(int64_t x, int e)
{
    return e > 0 ? x * ((int64_t)1 << e) : floor_shift(x, -e);
}

/* Linear interpolation in a table stepped 2^-LUT_STEP_BITS; idx >= 0 has frac_bits. */
static inline int64_t lookup(const int64_t *lut, int64_t idx, int frac_bits)
{
    int sh = frac_bits - LUT_STEP_BITS;
    int64_t i = idx >> sh, f = idx & (((int64_t)1 << sh) - 1);
    int64_t lo = lut[i];
    return lo + floor_shift((lut[i + 1] - lo) * f, sh);
}

/* ⌊n / i⌋ for 1 <= i <= ICDF_TERMS without a divide instruction where 128-bit products exist:
 * ⌊n·m_i / 2^50⌋ with m_i = ⌊2^50 / i⌋ + 1 equals it for every n < 2^43, since
 * 0 < m_i·i − 2^50 <= i < 2^7 = 2^50 / 2^43 (Granlund & Montgomery 1994, theorem 4.2). */
#define DIV_SHIFT 50
#define DIV_RANGE ((uint64_t)1 << 43)
static uint64_t div_magic[ICDF_TERMS + 1];

static void init_div_magic(void)
{
    for (int i = 1; i <= ICDF_TERMS; i++)
        div_magic[i] = ((uint64_t)1 << DIV_SHIFT) / (uint64_t)i + 1;
}

static inline uint64_t div_term(uint64_t n, int64_t i)
{
#ifdef __SIZEOF_INT128__
    if (n < DIV_RANGE)
        return (uint64_t)(((unsigned __int128)n * div_magic[i]) >> DIV_SHIFT);
#endif
    return n / (uint64_t)i;
}

/* The count of one rate part r <= SPLIT_RATE·2^R_FRAC at uniform v < 2^32.  The terms are
 * p_i = ⌊p_{i−1}·r / (i·2^R_FRAC)⌋ = ⌊⌊p_{i−1}·r / 2^R_FRAC⌋ / i⌋ (nested floors of
 * non-negative integers), p_{i−1}·r <= 2^P_FRAC·2^24 = 2^62. */
static inline int64_t icdf_part(int64_t v, int64_t r, const int64_t *negexp)
{
    int64_t p = lookup(negexp, r, R_FRAC), target = v << (P_FRAC - 32), cdf = p;
    if (cdf >= target)
        return 0;
    for (int64_t i = 1; i <= ICDF_TERMS; i++) {
        p = (int64_t)div_term((uint64_t)(p * r) >> R_FRAC, i);
        cdf += p;
        if (cdf >= target)
            return i;
    }
    return ICDF_TERMS;
}

/* R = e^u·2^R_FRAC of a potential U = u·2^U_FRAC (neurons.fixed.rate). */
static inline int64_t rate_of(int64_t U, const int64_t *exp_lut)
{
    const int64_t lo = (int64_t)EXP_LO << U_FRAC;
    const int64_t hi = ((int64_t)(EXP_HI - EXP_LO) << U_FRAC) - 1;
    int64_t idx = U - lo;
    idx = idx < 0 ? 0 : (idx > hi ? hi : idx);
    return lookup(exp_lut, idx, U_FRAC);
}

/* The summed counts of n <= LANES rate parts (rates r, uniforms v), their chains of terms
 * interleaved so that the CPU overlaps them.  Lane l counts #{i < ICDF_TERMS : F_i < target}
 * (F is non-decreasing, so that is icdf_part's first i with F_i >= target, capped); the
 * loop stops once no lane's F_{i-1} is below its target.  Unused lanes have F_0 > target. */
#define LANES 4
static inline int64_t icdf_parts(const int64_t *v, const int64_t *r, int n, const int64_t *negexp)
{
    int64_t p[LANES], rr[LANES], cdf[LANES], target[LANES], m[LANES];
    for (int l = 0; l < LANES; l++) {
        rr[l] = l < n ? r[l] : 0;
        p[l] = l < n ? lookup(negexp, r[l], R_FRAC) : 0;
        cdf[l] = l < n ? p[l] : 1;
        target[l] = l < n ? v[l] << (P_FRAC - 32) : 0;
        m[l] = 0;
    }
    for (int64_t i = 1; i <= ICDF_TERMS; i++) {
        int64_t going = 0;
        for (int l = 0; l < LANES; l++) {
            int64_t below = cdf[l] < target[l];
            m[l] += below;
            going |= below;
            p[l] = (int64_t)div_term((uint64_t)(p[l] * rr[l]) >> R_FRAC, i);
            cdf[l] += p[l];
        }
        if (!going)
            break;
    }
    int64_t total = 0;
    for (int l = 0; l < LANES; l++)
        total += m[l];
    return total;
}

/* The count of one neuron at rate R: the sum of its parts' counts (neurons.fixed.counts_numpy).
 * key: its row's stream key; base: its first counter; first: its explicit uniform, or NULL. */
static inline int64_t count_of(int64_t rate, uint64_t key, uint64_t base, const int64_t *first,
                               const int64_t *negexp)
{
    const int64_t split = (int64_t)SPLIT_RATE << R_FRAC;
    int64_t parts = (rate + split - 1) / split;
    if (parts <= 1)
        return icdf_part(first ? *first : uniform(key, base), rate, negexp);
    int64_t total = 0;
    for (int64_t j0 = 0; j0 < parts; j0 += LANES) {
        int64_t v[LANES], r[LANES];
        int n = parts - j0 < LANES ? (int)(parts - j0) : LANES;
        for (int l = 0; l < n; l++) {
            int64_t j = j0 + l;
            if (first)
                v[l] = j == 0 ? *first : uniform((uint64_t)*first, (uint64_t)j);
            else
                v[l] = uniform(key, base + (uint64_t)j);
            r[l] = (rate + j) / parts;
        }
        total += icdf_parts(v, r, n, negexp);
    }
    return total;
}

/* Hard floor at U_FLOOR, then C − softplus(C − X) (neurons.fixed.soft_clamp), all Q.12. */
static inline int64_t soft_clamp(int64_t x, int64_t c, const int64_t *softplus)
{
    const int64_t lo = (int64_t)SOFTPLUS_LO << U_FRAC, hi = (int64_t)SOFTPLUS_HI << U_FRAC;
    if (x < ((int64_t)U_FLOOR << U_FRAC))
        x = (int64_t)U_FLOOR << U_FRAC;
    int64_t s = c - x;
    int64_t sp = s < lo ? 0 : (s >= hi ? s : lookup(softplus, s - lo, U_FRAC));
    return c - sp;
}

static int get(PyObject *obj, Py_buffer *view, int writable, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous 64-bit integer buffer", name);
        return -1;
    }
    return 0;
}

static int tables_ok(Py_ssize_t exp_len, Py_ssize_t neg_len)
{
    return exp_len >= (int64_t)(EXP_HI - EXP_LO) * (1 << LUT_STEP_BITS) + 1 &&
           neg_len >= (int64_t)SPLIT_RATE * (1 << LUT_STEP_BITS) + 2;
}

/* counts(U, keys, t, exp_lut, negexp_lut, first or None, z_out, R_out)
 * U, first, z_out, R_out: (N*K) int64; keys: (N) uint64. */
static PyObject *counts(PyObject *self, PyObject *args)
{
    PyObject *o[8];
    long long t;
    if (!PyArg_ParseTuple(args, "OOLOOOOO", &o[0], &o[1], &t, &o[2], &o[3], &o[4], &o[5], &o[6]))
        return NULL;
    PyObject *objs[7] = {o[0], o[1], o[2], o[3], o[4], o[5], o[6]};
    const char *names[7] = {"U", "keys", "exp_lut", "negexp_lut", "first", "z_out", "R_out"};
    int writable[7] = {0, 0, 0, 0, 0, 1, 1};
    Py_buffer v[7];
    int got = 0;
    for (; got < 7; got++) {
        if (got == 4 && objs[4] == Py_None)
            continue;
        if (get(objs[got], &v[got], writable[got], names[got]) < 0)
            goto fail;
    }
    Py_ssize_t nk = v[0].len / 8, n = v[1].len / 8;
    int have_first = objs[4] != Py_None;
    if (n == 0 || nk % n || v[5].len != v[0].len || v[6].len != v[0].len ||
        (have_first && v[4].len != v[0].len)) {
        PyErr_SetString(PyExc_ValueError, "counts: inconsistent buffer sizes");
        goto fail;
    }
    Py_ssize_t k = nk / n;
    if (!tables_ok(v[2].len / 8, v[3].len / 8)) {
        PyErr_SetString(PyExc_ValueError, "counts: tables too short");
        goto fail;
    }
    const int64_t *U = v[0].buf, *exp_lut = v[2].buf, *negexp = v[3].buf;
    const uint64_t *keys = v[1].buf;
    const int64_t *first = have_first ? v[4].buf : NULL;
    int64_t *z = v[5].buf, *R = v[6].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < n; row++) {
        for (Py_ssize_t col = 0; col < k; col++) {
            Py_ssize_t a = row * k + col;
            uint64_t base = ((uint64_t)t * (uint64_t)k + (uint64_t)col) * SUBDRAW_STRIDE;
            R[a] = rate_of(U[a], exp_lut);
            z[a] = count_of(R[a], keys[row], base, first ? first + a : NULL, negexp);
        }
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 7; i++)
        if (!(i == 4 && !have_first))
            PyBuffer_Release(&v[i]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < got; i++)
        if (!(i == 4 && objs[4] == Py_None))
            PyBuffer_Release(&v[i]);
    return NULL;
}

/* --- step: the emulator's step of a row block, fused ---------------------------------------- */

/* The parameters of one call shared by its rows. */
typedef struct {
    Py_ssize_t k;
    uint64_t t;
    const uint64_t *keys;
    const int64_t *exp_lut, *negexp, *softplus, *drive, *self_w, *bias;
    const int16_t *w_t; /* (pre, post) */
    int64_t w_max, count_max, eta, clamp_u, clamp_du;
    int rec_exp, self_exp;
} StepParams;

/* Per-row scratch: the nonzero counts (index, value) and the Dense accumulators. */
typedef struct {
    int32_t *nz_idx, *acc32;
    int64_t *nz_val, *acc64;
} Scratch;

/* One row (row index i, its potentials U, first uniforms or NULL): counts z and rates R,
 * then U_next.  Adds to sat[0] (counts) and sat[1] (currents); returns its number of nonzero
 * counts and its rate sum (*rate_sum), or -1 when the Dense accumulation left int32. */
WIDE static Py_ssize_t step_row(const StepParams *p, Py_ssize_t i, const int64_t *U,
                                const int64_t *first, int64_t *z, int64_t *R, int64_t *U_next,
                                int64_t *rate_sum, int64_t *sat, Scratch *s)
{
    const Py_ssize_t k = p->k;
    const uint64_t key = p->keys[i];
    const uint64_t base0 = p->t * (uint64_t)k;
    const int64_t split = (int64_t)SPLIT_RATE << R_FRAC;
    int64_t rsum = 0, zsum = 0, clipped = 0;
    Py_ssize_t nnz = 0;
    /* Rates and each neuron's first uniform in loops without branches (the uniforms
     * vectorise); z holds the first uniform meanwhile. */
    for (Py_ssize_t c = 0; c < k; c++) {
        R[c] = rate_of(U[c], p->exp_lut);
        rsum += R[c];
    }
    if (first != NULL)
        memcpy(z, first, (size_t)k * sizeof(int64_t));
    else
        for (Py_ssize_t c = 0; c < k; c++)
            z[c] = uniform(key, (base0 + (uint64_t)c) * SUBDRAW_STRIDE);
    /* Most counts are 0: one part (R <= split) whose first term e^-r already reaches the
     * uniform (icdf_part's first test).  Those are settled here, flagged -1 otherwise. */
    for (Py_ssize_t c = 0; c < k; c++) {
        int64_t r = R[c] < split ? R[c] : split; /* keeps the table index in range */
        int64_t zero = R[c] <= split && lookup(p->negexp, r, R_FRAC) >= (z[c] << (P_FRAC - 32));
        z[c] = zero ? 0 : -1;
    }
    for (Py_ssize_t c = 0; c < k; c++) {
        if (z[c] == 0)
            continue;
        int64_t m = count_of(R[c], key, (base0 + (uint64_t)c) * SUBDRAW_STRIDE,
                             first ? first + c : NULL, p->negexp);
        if (m > p->count_max) { /* the graded spike saturates its payload */
            m = p->count_max;
            clipped++;
        }
        z[c] = m;
        if (m != 0) {
            s->nz_idx[nnz] = (int32_t)c;
            s->nz_val[nnz++] = m;
            zsum += m;
        }
    }
    sat[0] += clipped;
    *rate_sum = rsum;
    /* The Dense over the nonzero counts: K multiply-adds each.  Integer sums are exact in any
     * order; in 32 bits while sum |z| |w| < 2^31 bounds every partial sum, else in 64 bits and
     * each total checked against int32 (Lava's Dense would wrap). */
    const int16_t *w = p->w_t;
    if (zsum <= (INT32_MAX / (p->w_max > 0 ? p->w_max : 1))) {
        int32_t *acc = s->acc32;
        memset(acc, 0, (size_t)k * sizeof(int32_t));
        for (Py_ssize_t q = 0; q < nnz; q++) {
            const int16_t *row = w + (Py_ssize_t)s->nz_idx[q] * k;
            const int32_t zq = (int32_t)s->nz_val[q];
            for (Py_ssize_t c = 0; c < k; c++)
                acc[c] += zq * (int32_t)row[c];
        }
        for (Py_ssize_t c = 0; c < k; c++)
            s->acc64[c] = acc[c];
    } else {
        int64_t *acc = s->acc64;
        memset(acc, 0, (size_t)k * sizeof(int64_t));
        for (Py_ssize_t q = 0; q < nnz; q++) {
            const int16_t *row = w + (Py_ssize_t)s->nz_idx[q] * k;
            const int64_t zq = s->nz_val[q];
            for (Py_ssize_t c = 0; c < k; c++)
                acc[c] += zq * (int64_t)row[c];
        }
        for (Py_ssize_t c = 0; c < k; c++)
            if (acc[c] > INT32_MAX || acc[c] < INT32_MIN)
                return -1;
    }
    /* the membrane step (neurons.fixed.membrane); the parameters in locals, which the stores
     * to U_next cannot alias */
    const int64_t *drive = p->drive + i * k, *acc = s->acc64, *self_w = p->self_w,
                  *bias = p->bias, *softplus = p->softplus;
    const int64_t eta = p->eta, clamp_u = p->clamp_u, clamp_du = p->clamp_du;
    const int rec_exp = p->rec_exp, self_exp = p->self_exp;
    clipped = 0;
    for (Py_ssize_t c = 0; c < k; c++) {
        int64_t a = drive[c] + shift(acc[c], rec_exp) + shift(z[c] * self_w[c], self_exp) -
                    bias[c];
        if (a < PAYLOAD_MIN || a > PAYLOAD_MAX) {
            a = a < PAYLOAD_MIN ? PAYLOAD_MIN : PAYLOAD_MAX;
            clipped++;
        }
        int64_t du = soft_clamp(floor_shift(eta * a, ETA_FRAC), clamp_du, softplus);
        U_next[c] = soft_clamp(U[c] + du, clamp_u, softplus);
    }
    sat[1] += clipped;
    return nnz;
}

enum { F_U, F_UNEXT, F_Z, F_R, F_NNZ, F_RSUM, F_KEYS, F_FIRST, F_DRIVE, F_W, F_SELF, F_BIAS,
       F_EXP, F_NEGEXP, F_SOFTPLUS, F_SAT, F_NBUF };

PyDoc_STRVAR(step_doc,
"step(U, U_next, z, R, nnz, rate_sum, keys, first, drive, w_t, self_w, bias, exp_lut,\n"
"     negexp_lut, softplus_lut, saturation, t, rec_exp, self_exp, w_max, eta, clamp_u,\n"
"     clamp_du, count_bits)\n\n"
"One step of the fixed-point latents of a row block of n inputs, K latents, one pass per row\n"
"(neurons.fixed.FixedLatent.fire, dense_t and integrate): z (n, K) <- the counts at step t\n"
"saturated at 2^count_bits - 1, R (n, K) <- the rates, nnz (n,) <- nonzero counts per row,\n"
"rate_sum (n,) <- the sum of R per row, U_next (n, K) <- the membrane step from U (n, K),\n"
"the drive (n, K), the recurrent weights w_t (K, K) int16 [pre, post] (|w| <= w_max, shifted\n"
"by rec_exp), the self-term self_w (K,) (shifted by self_exp) and bias (K,).  keys (n,) uint64;\n"
"first (n, K) explicit uniforms or None; saturation (2,) += saturated counts, currents.  All\n"
"other buffers C-contiguous int64.  OverflowError when a Dense sum leaves int32.");

static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != F_NBUF + 8) {
        PyErr_Format(PyExc_TypeError, "step takes %d arguments", F_NBUF + 8);
        return NULL;
    }
    unsigned long long t = PyLong_AsUnsignedLongLong(args[F_NBUF]);
    long rec_exp = PyLong_AsLong(args[F_NBUF + 1]), self_exp = PyLong_AsLong(args[F_NBUF + 2]);
    long long w_max = PyLong_AsLongLong(args[F_NBUF + 3]),
              eta = PyLong_AsLongLong(args[F_NBUF + 4]),
              clamp_u = PyLong_AsLongLong(args[F_NBUF + 5]),
              clamp_du = PyLong_AsLongLong(args[F_NBUF + 6]);
    long count_bits = PyLong_AsLong(args[F_NBUF + 7]);
    if (PyErr_Occurred())
        return NULL;
    if (rec_exp < -62 || rec_exp > 30 || self_exp < -62 || self_exp > 30 || count_bits < 1 ||
        count_bits > 62 || w_max < 0 || w_max > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "step: an exponent, w_max or count_bits out of range");
        return NULL;
    }
    static const int writable[F_NBUF] = {[F_UNEXT] = 1, [F_Z] = 1, [F_R] = 1, [F_NNZ] = 1,
                                         [F_RSUM] = 1, [F_SAT] = 1};
    Py_buffer v[F_NBUF];
    memset(v, 0, sizeof(v));
    int i;
    for (i = 0; i < F_NBUF; i++) {
        if (i == F_FIRST && args[i] == Py_None)
            continue;
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable[i] ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(args[i], &v[i], flags) < 0)
            goto fail;
        const char *want = i == F_W ? "h" : (i == F_KEYS ? "LQ" : "lq"); /* native formats */
        const char *f = v[i].format == NULL ? "B" : v[i].format;
        if (v[i].itemsize != (i == F_W ? 2 : 8) || f[0] == 0 || f[1] != 0 ||
            strchr(want, f[0]) == NULL) {
            PyErr_Format(PyExc_ValueError, "step: argument %d must be a C-contiguous %s buffer",
                         i, i == F_W ? "int16" : (i == F_KEYS ? "uint64" : "int64"));
            i++;
            goto fail;
        }
    }
#define LEN(j) (v[j].buf == NULL ? 0 : v[j].len / v[j].itemsize)
    Py_ssize_t k = LEN(F_BIAS), n = LEN(F_KEYS), nk = n * k;
    if (k == 0 || k > INT32_MAX || LEN(F_U) != nk || LEN(F_UNEXT) != nk || LEN(F_Z) != nk ||
        LEN(F_R) != nk || LEN(F_NNZ) != n || LEN(F_RSUM) != n || LEN(F_DRIVE) != nk ||
        LEN(F_W) != k * k || LEN(F_SELF) != k || LEN(F_SAT) != 2 ||
        (v[F_FIRST].buf != NULL && LEN(F_FIRST) != nk)) {
        PyErr_SetString(PyExc_ValueError, "step: buffer sizes do not match (n, K), (K, K), (K,)");
        goto fail;
    }
    if (!tables_ok(LEN(F_EXP), LEN(F_NEGEXP)) ||
        LEN(F_SOFTPLUS) < (int64_t)(SOFTPLUS_HI - SOFTPLUS_LO) * (1 << LUT_STEP_BITS) + 1) {
        PyErr_SetString(PyExc_ValueError, "step: tables too short");
        goto fail;
    }
#undef LEN
    StepParams p = {k, (uint64_t)t, v[F_KEYS].buf, v[F_EXP].buf, v[F_NEGEXP].buf,
                    v[F_SOFTPLUS].buf, v[F_DRIVE].buf, v[F_SELF].buf, v[F_BIAS].buf, v[F_W].buf,
                    w_max, ((int64_t)1 << count_bits) - 1, eta, clamp_u, clamp_du, (int)rec_exp,
                    (int)self_exp};
    const int64_t *U = v[F_U].buf, *first = v[F_FIRST].buf;
    int64_t *U_next = v[F_UNEXT].buf, *z = v[F_Z].buf, *R = v[F_R].buf, *nnz = v[F_NNZ].buf,
            *rsum = v[F_RSUM].buf, *sat = v[F_SAT].buf;
    int failed = 0; /* 1: no memory, 2: a Dense sum left int32 */
    Py_BEGIN_ALLOW_THREADS
    Scratch s = {malloc((size_t)k * sizeof(int32_t)), malloc((size_t)k * sizeof(int32_t)),
                 malloc((size_t)k * sizeof(int64_t)), malloc((size_t)k * sizeof(int64_t))};
    if (s.nz_idx == NULL || s.acc32 == NULL || s.nz_val == NULL || s.acc64 == NULL) {
        failed = 1;
    } else {
        int64_t counted[2] = {0, 0};
        for (Py_ssize_t r = 0; r < n && !failed; r++) {
            Py_ssize_t got = step_row(&p, r, U + r * k, first ? first + r * k : NULL, z + r * k,
                                      R + r * k, U_next + r * k, rsum + r, counted, &s);
            if (got < 0)
                failed = 2;
            else
                nnz[r] = got;
        }
        sat[0] += counted[0];
        sat[1] += counted[1];
    }
    free(s.nz_idx);
    free(s.acc32);
    free(s.nz_val);
    free(s.acc64);
    Py_END_ALLOW_THREADS
    for (int j = 0; j < F_NBUF; j++)
        if (v[j].buf != NULL)
            PyBuffer_Release(&v[j]);
    if (failed == 1)
        return PyErr_NoMemory();
    if (failed == 2) {
        PyErr_SetString(PyExc_OverflowError,
                        "a Dense accumulation left the int32 range (Lava's fixed_pt Dense would "
                        "wrap): reduce the count or input payload bits");
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    for (int j = 0; j < i; j++)
        if (v[j].buf != NULL)
            PyBuffer_Release(&v[j]);
    return NULL;
}

static PyObject *constants(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(iiiiiiiiiiiiii)", U_FRAC, R_FRAC, P_FRAC, LUT_STEP_BITS, EXP_LO,
                         EXP_HI, SPLIT_RATE, SUBDRAW_STRIDE, ICDF_TERMS, ETA_FRAC, SOFTPLUS_LO,
                         SOFTPLUS_HI, U_FLOOR, STATE_BITS);
}

static PyMethodDef methods[] = {
    {"counts", counts, METH_VARARGS, "Spike counts and rates of the fixed-point step."},
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL, step_doc},
    {"constants", constants, METH_NOARGS, "The format constants compiled in."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fixed", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fixed(void)
{
    init_div_magic();
    return PyModule_Create(&module);
}
