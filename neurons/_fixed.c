/* Compiled spike counts of the fixed-point latent step (neurons/fixed.py, design §2.4).
 *
 * `counts` is neurons.fixed.counts_numpy written as one loop per neuron: the rate from the
 * e^u table, the split into parts of at most SPLIT_RATE spikes per step, the counter-based
 * uniforms (SplitMix64's finaliser) and the Q.38 inverse CDF.  Integers only (int64 and
 * wrapping uint64), so it equals the numpy code bit for bit on any CPU
 * (tests/test_fixed_point.py checks it).  Floor shifts of negative values are written out,
 * not left to the compiler's `>>`.  Releases the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define U_FRAC 12
#define R_FRAC 20
#define P_FRAC 38
#define LUT_STEP_BITS 6
#define EXP_LO (-9)
#define EXP_HI 11
#define SPLIT_RATE 16
#define SUBDRAW_STRIDE 4096
#define ICDF_TERMS 126

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

static inline int64_t floor_shift(int64_t x, int sh)
{
    return x >= 0 ? x >> sh : -((-x + (((int64_t)1 << sh) - 1)) >> sh);
}

/* Linear interpolation in a table stepped 2^-LUT_STEP_BITS; idx >= 0 has frac_bits. */
static inline int64_t lookup(const int64_t *lut, int64_t idx, int frac_bits)
{
    int sh = frac_bits - LUT_STEP_BITS;
    int64_t i = idx >> sh, f = idx & (((int64_t)1 << sh) - 1);
    int64_t lo = lut[i];
    return lo + floor_shift((lut[i + 1] - lo) * f, sh);
}

static inline int64_t icdf_part(int64_t v, int64_t r, const int64_t *negexp)
{
    int64_t p = lookup(negexp, r, R_FRAC), target = v << (P_FRAC - 32), cdf = p;
    if (cdf >= target)
        return 0;
    for (int64_t i = 1; i <= ICDF_TERMS; i++) {
        p = (p * r) / (i << R_FRAC);
        cdf += p;
        if (cdf >= target)
            return i;
    }
    return ICDF_TERMS;
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
    Py_ssize_t exp_len = v[2].len / 8, neg_len = v[3].len / 8;
    if (exp_len < (int64_t)(EXP_HI - EXP_LO) * (1 << LUT_STEP_BITS) + 1 ||
        neg_len < (int64_t)SPLIT_RATE * (1 << LUT_STEP_BITS) + 2) {
        PyErr_SetString(PyExc_ValueError, "counts: tables too short");
        goto fail;
    }
    const int64_t *U = v[0].buf, *exp_lut = v[2].buf, *negexp = v[3].buf;
    const uint64_t *keys = v[1].buf;
    const int64_t *first = have_first ? v[4].buf : NULL;
    int64_t *z = v[5].buf, *R = v[6].buf;
    Py_BEGIN_ALLOW_THREADS
    const int64_t lo = (int64_t)EXP_LO << U_FRAC;
    const int64_t hi = ((int64_t)(EXP_HI - EXP_LO) << U_FRAC) - 1;
    const int64_t split = (int64_t)SPLIT_RATE << R_FRAC;
    for (Py_ssize_t a = 0; a < nk; a++) {
        Py_ssize_t row = a / k, col = a % k;
        int64_t idx = U[a] - lo;
        idx = idx < 0 ? 0 : (idx > hi ? hi : idx);
        int64_t rate = lookup(exp_lut, idx, U_FRAC);
        int64_t parts = (rate + split - 1) / split;
        uint64_t base = ((uint64_t)t * (uint64_t)k + (uint64_t)col) * SUBDRAW_STRIDE;
        int64_t total = 0;
        if (parts <= 1) {
            int64_t u = first ? first[a] : uniform(keys[row], base);
            total = icdf_part(u, rate, negexp);
        } else {
            for (int64_t j = 0; j < parts; j++) {
                int64_t u;
                if (first)
                    u = j == 0 ? first[a] : uniform((uint64_t)first[a], (uint64_t)j);
                else
                    u = uniform(keys[row], base + (uint64_t)j);
                total += icdf_part(u, (rate + j) / parts, negexp);
            }
        }
        z[a] = total;
        R[a] = rate;
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

static PyObject *constants(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(iiiiiiiii)", U_FRAC, R_FRAC, P_FRAC, LUT_STEP_BITS, EXP_LO, EXP_HI,
                         SPLIT_RATE, SUBDRAW_STRIDE, ICDF_TERMS);
}

static PyMethodDef methods[] = {
    {"counts", counts, METH_VARARGS, "Spike counts and rates of the fixed-point step."},
    {"constants", constants, METH_NOARGS, "The format constants compiled in."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fixed", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fixed(void) { return PyModule_Create(&module); }
