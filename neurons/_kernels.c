/* Compiled element-wise kernels of the latent neuron (DESIGN.md §1).
 *
 * A literal C transcription of neurons/poisson.py: the Poisson inverse CDF
 * recipe of `poisson_icdf` (fused with the rate e^u) and `membrane_update`
 * with numpy's own logaddexp formula, so that, fed the same float64 inputs,
 * they give the same counts and the same potentials as the numpy functions.
 * Both work on C-contiguous float64 buffers, element by element, and release
 * the GIL, so the caller may split a batch's rows across threads.
 *
 * Compile without -ffast-math and with -ffp-contract=off: fused multiply-adds
 * or reassociation would change the rounding and break the bit-for-bit match.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define U_FLOOR (-8.0)
#define ICDF_START_SIGMAS 10.0
#define ICDF_CAP_SIGMAS 20.0
#define ICDF_CAP_EXTRA 30.0
#define LOGE2 0.693147180559945309417232121458176568

/* numpy's npy_logaddexp(0, y): log(1 + e^y) without overflow. */
static double softplus(double y)
{
    if (y == 0.0)
        return LOGE2;
    double tmp = 0.0 - y;
    if (tmp > 0)
        return 0.0 + log1p(exp(-tmp));
    if (tmp <= 0)
        return y + log1p(exp(tmp));
    return tmp; /* NaN */
}

/* The authors' clamp: hard floor at -8 (NaN passes through, as np.maximum), then c - softplus(c - x). */
static double clamp(double x, double c)
{
    if (x < U_FLOOR)
        x = U_FLOOR;
    return c - softplus(c - x);
}

/* The least m >= 0 with P(Z <= m; r) >= xi: the recipe of neurons.poisson.poisson_icdf. */
static double icdf(double xi, double r)
{
    double m = 0.0, p;
    if (r > ICDF_START_SIGMAS * ICDF_START_SIGMAS) {
        m = floor(fmax(r - ICDF_START_SIGMAS * sqrt(r), 0.0));
        p = exp((m > 0 ? m * log(r) : 0.0) - r - lgamma(m + 1.0));
    } else {
        p = exp(-r);
    }
    double cdf = p;
    if (!(cdf < xi))
        return m;
    double cap = r + ICDF_CAP_SIGMAS * sqrt(r) + ICDF_CAP_EXTRA;
    while (cdf < xi && m < cap) {
        m += 1.0;
        p *= r / m;
        cdf += p;
    }
    return m;
}

static int get_buffers(PyObject *const *args, Py_buffer *views, int n, int n_writable,
                       Py_ssize_t *size)
{
    /* args[0 .. n-1]: the last n_writable are written; all float64 of the same length. */
    for (int i = 0; i < n; i++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (i >= n - n_writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(args[i], &views[i], flags) < 0) {
            for (int j = 0; j < i; j++)
                PyBuffer_Release(&views[j]);
            return -1;
        }
    }
    *size = views[0].len / (Py_ssize_t)sizeof(double);
    for (int i = 0; i < n; i++) {
        if (views[i].itemsize != sizeof(double) || strcmp(views[i].format, "d") != 0
                || views[i].len != views[0].len) {
            for (int j = 0; j < n; j++)
                PyBuffer_Release(&views[j]);
            PyErr_SetString(PyExc_ValueError,
                            "kernel arguments must be C-contiguous float64 buffers of equal length");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(spikes_doc,
"spikes(u, xi, rate_out, counts_out)\n\n"
"rate_out = exp(u); counts_out = poisson_icdf(xi, rate_out) (as float64).\n"
"All four: C-contiguous float64 buffers of one length.");

static PyObject *spikes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "spikes(u, xi, rate_out, counts_out) takes 4 arguments");
        return NULL;
    }
    Py_buffer v[4];
    Py_ssize_t n;
    if (get_buffers(args, v, 4, 2, &n) < 0)
        return NULL;
    const double *u = v[0].buf, *xi = v[1].buf;
    double *rate = v[2].buf, *counts = v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double r = exp(u[i]);
        rate[i] = r;
        counts[i] = icdf(xi[i], r);
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 4; i++)
        PyBuffer_Release(&v[i]);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(membrane_doc,
"membrane(u, feedback, bias, out, eta, clamp_u, clamp_du)\n\n"
"out = clamp(u + clamp(eta * (feedback - bias), clamp_du), clamp_u) element by element.\n"
"u, feedback, out: C-contiguous float64 (rows, K) of one length; bias: float64 (K,).");

static PyObject *membrane(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "membrane(u, feedback, bias, out, eta, clamp_u, clamp_du) takes 7 arguments");
        return NULL;
    }
    double eta = PyFloat_AsDouble(args[4]), cu = PyFloat_AsDouble(args[5]),
           cdu = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *arrays[3] = {args[0], args[1], args[3]};
    Py_buffer v[3], vb;
    Py_ssize_t n;
    if (get_buffers(arrays, v, 3, 1, &n) < 0)
        return NULL;
    if (get_buffers(&args[2], &vb, 1, 0, &n) < 0) {
        for (int i = 0; i < 3; i++)
            PyBuffer_Release(&v[i]);
        return NULL;
    }
    Py_ssize_t k = vb.len / (Py_ssize_t)sizeof(double);
    n = v[0].len / (Py_ssize_t)sizeof(double);
    if (k == 0 || n % k != 0) {
        for (int i = 0; i < 3; i++)
            PyBuffer_Release(&v[i]);
        PyBuffer_Release(&vb);
        PyErr_SetString(PyExc_ValueError, "bias length must divide the length of u");
        return NULL;
    }
    const double *u = v[0].buf, *fb = v[1].buf, *b = vb.buf;
    double *out = v[2].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < n; row += k) {
        for (Py_ssize_t j = 0; j < k; j++) {
            Py_ssize_t i = row + j;
            double du = (fb[i] - b[j]) * eta;
            out[i] = clamp(clamp(du, cdu) + u[i], cu);
        }
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 3; i++)
        PyBuffer_Release(&v[i]);
    PyBuffer_Release(&vb);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"spikes", (PyCFunction)(void (*)(void))spikes, METH_FASTCALL, spikes_doc},
    {"membrane", (PyCFunction)(void (*)(void))membrane, METH_FASTCALL, membrane_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled element-wise kernels of the latent neuron (see neurons/kernels.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
