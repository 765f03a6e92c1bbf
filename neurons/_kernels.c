/* Compiled kernels of the reference simulator's step (design §1, §2).
 *
 * - `spikes`: the Poisson inverse CDF of recipe.h (design §2.1), fused with the rate e^u;
 * - `membrane`: membrane_update, with recipe.h's clamp (numpy's logaddexp branches);
 * - `readout`: the read-out Φz driven by the spikes fired (event-driven: work in
 *   proportion to the nonzero counts, as on neuromorphic hardware);
 * - `uniforms`: the shared-noise streams (_philox.h), equal to numpy's bit for bit.
 *
 * The constants and the scalar steps come from recipe.h.  exp and log1p run through
 * _vecmath.h: libmvec's AVX2 code where available (within 1-2 ulp of libm), else scalar
 * libm; either way rates, potentials and counts meet the contract of design §2.1
 * (neurons.poisson.EXP_ULP_TOLERANCE, tests/test_kernels.py).  Everything else is compiled
 * without -ffast-math and with -ffp-contract=off, so no FMA or reassociation changes the
 * rounding of the transcribed formulas.  All work on C-contiguous float64
 * buffers and releases the GIL, so callers may split a batch's rows across threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

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

/* --- spikes ------------------------------------------------------------------------------- */

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
    double p0[CHUNK];
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t m = n - start < CHUNK ? n - start : CHUNK;
        double *r = rate + start;
        memcpy(r, u + start, (size_t)m * sizeof(double));
        map_exp(r, m);
        for (Py_ssize_t j = 0; j < m; j++) /* far rates start elsewhere (ipvae_icdf_start) */
            p0[j] = ipvae_icdf_far(r[j]) ? 0.0 : -r[j];
        map_exp(p0, m);
        for (Py_ssize_t j = 0; j < m; j++) {
            double c0 = 0.0, p = p0[j];
            if (ipvae_icdf_far(r[j]))
                c0 = ipvae_icdf_start(r[j], &p);
            double c = ipvae_icdf_search(xi[start + j], r[j], c0, p);
            counts[start + j] = c;
            fired += c != 0.0;
        }
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
    double x[CHUNK], y[CHUNK], l[CHUNK];
    for (Py_ssize_t row = 0; row < n; row += k) {
        for (Py_ssize_t c0 = 0; c0 < k; c0 += CHUNK) {
            Py_ssize_t m = k - c0 < CHUNK ? k - c0 : CHUNK, i0 = row + c0;
            for (Py_ssize_t j = 0; j < m; j++)
                x[j] = (fb[i0 + j] - b[c0 + j]) * eta;
            clamp_start(x, cdu, y, l, m);
            for (Py_ssize_t j = 0; j < m; j++)
                x[j] = (cdu - ipvae_softplus_from(y[j], l[j])) + u[i0 + j];
            clamp_start(x, cu, y, l, m);
            for (Py_ssize_t j = 0; j < m; j++)
                out[i0 + j] = cu - ipvae_softplus_from(y[j], l[j]);
        }
    }
    Py_END_ALLOW_THREADS
    release(v, 3);
    PyBuffer_Release(&vb);
    Py_RETURN_NONE;
}

/* --- readout ------------------------------------------------------------------------------ */

#ifdef VECMATH_X86
/* y += a * x over d elements; a multiply then an add (no FMA), as the scalar loop rounds. */
__attribute__((target("avx2"))) static void axpy_avx2(double a, const double *x, double *y,
                                                      Py_ssize_t d)
{
    __m256d va = _mm256_set1_pd(a);
    Py_ssize_t j = 0;
    for (; j + 4 <= d; j += 4)
        _mm256_storeu_pd(y + j, _mm256_add_pd(_mm256_loadu_pd(y + j),
                                              _mm256_mul_pd(va, _mm256_loadu_pd(x + j))));
    for (; j < d; j++)
        y[j] += a * x[j];
}
#endif

static void axpy(double a, const double *x, double *y, Py_ssize_t d, int avx2)
{
#ifdef VECMATH_X86
    if (avx2) {
        axpy_avx2(a, x, y, d);
        return;
    }
#endif
    for (Py_ssize_t j = 0; j < d; j++)
        y[j] += a * x[j];
}

PyDoc_STRVAR(readout_doc,
"readout(z, phi_t, out)\n\n"
"out = z @ phi_t, summing over the nonzero entries of z only (row n: sum over k of\n"
"z[n, k] * phi_t[k], in order of k).  z (N, K), phi_t (K, D), out (N, D): C-contiguous float64.");

static PyObject *readout(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 3, "readout(z, phi_t, out)") < 0)
        return NULL;
    Py_buffer v[3];
    if (get_float64(args, v, 3, 1) < 0)
        return NULL;
    if (v[0].ndim != 2 || v[1].ndim != 2 || v[2].ndim != 2 || v[0].shape[1] != v[1].shape[0]
            || v[2].shape[0] != v[0].shape[0] || v[2].shape[1] != v[1].shape[1]) {
        release(v, 3);
        PyErr_SetString(PyExc_ValueError, "readout needs z (N, K), phi_t (K, D) and out (N, D)");
        return NULL;
    }
    Py_ssize_t n = v[0].shape[0], k = v[0].shape[1], d = v[1].shape[1];
    const double *z = v[0].buf, *phi_t = v[1].buf;
    double *out = v[2].buf;
    int avx2 = cpu_has_avx2();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double *y = out + i * d;
        memset(y, 0, (size_t)d * sizeof(double));
        for (Py_ssize_t j = 0; j < k; j++)
            if (z[i * k + j] != 0.0)
                axpy(z[i * k + j], phi_t + j * d, y, d, avx2);
    }
    Py_END_ALLOW_THREADS
    release(v, 3);
    Py_RETURN_NONE;
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

PyDoc_STRVAR(vector_math_doc,
"vector_math(on=None) -> bool\n\n"
"Whether spikes and membrane compute exp and log1p with libmvec (AVX2); on=True/False\n"
"asks for it / for scalar libm.  Returns the setting in force.");

static PyObject *vector_math(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "vector_math(on=None) takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        int on = PyObject_IsTrue(args[0]);
        if (on < 0)
            return NULL;
        vecmath_use(on);
    }
    return PyBool_FromLong(vecmath_on);
}

static PyMethodDef methods[] = {
    {"spikes", (PyCFunction)(void (*)(void))spikes, METH_FASTCALL, spikes_doc},
    {"membrane", (PyCFunction)(void (*)(void))membrane, METH_FASTCALL, membrane_doc},
    {"readout", (PyCFunction)(void (*)(void))readout, METH_FASTCALL, readout_doc},
    {"uniforms", (PyCFunction)(void (*)(void))uniforms, METH_FASTCALL, uniforms_doc},
    {"vector_math", (PyCFunction)(void (*)(void))vector_math, METH_FASTCALL, vector_math_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled kernels of the reference simulator's step (see neurons/kernels.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    vecmath_use(1);
    return PyModule_Create(&module);
}
