"""The snntorch latent neuron: exact counts at temperature 0, relaxed counts above it."""
import numpy as np
import pytest

import neurons  # noqa: F401  (OMP_WAIT_POLICY before torch)
import torch
from snntorch import SpikingNeuron

from neurons.poisson import membrane_update, poisson_icdf
from neurons.relaxed import DenseNoise, relaxed_poisson, saturation, width_needed
from neurons.snntorch import PoissonLatent
from neurons.torch_step import clamp_with_slope

torch.set_num_threads(1)


def test_is_an_snntorch_neuron():
    assert issubclass(PoissonLatent, SpikingNeuron)


def test_temperature_zero_gives_the_reference_counts_exactly():
    rng = np.random.default_rng(1)
    k = 64
    lat = PoissonLatent(k, dtype=torch.float64, learn=False)
    # potentials spanning the floor to the e^10 ceiling, including huge rates
    u = torch.as_tensor(rng.uniform(-8, 10, size=(50, k)))
    xi = torch.as_tensor(rng.random((50, k)))
    got = lat.fire(u, xi)
    want = poisson_icdf(xi.numpy(), np.exp(u.numpy()))
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy().astype(np.int64), want)
    assert want.max() > 1000  # the large-rate branch was exercised


def test_forward_step_is_the_reference_membrane_update_then_spikes():
    rng = np.random.default_rng(2)
    k, n = 32, 20
    lat = PoissonLatent(k, log_bias=torch.as_tensor(rng.normal(-3, 0.5, k)), log_eta=-0.5,
                        clamp_u=6.0, clamp_du=5.0, dtype=torch.float64)
    mem = torch.as_tensor(rng.uniform(-6, 6, (n, k)))
    fb = torch.as_tensor(rng.normal(0, 5, (n, k)))
    xi = torch.as_tensor(rng.random((n, k)))
    spk, mem2 = lat(fb, mem, noise=xi)
    want_u = membrane_update(mem.numpy(), fb.numpy(), np.exp(-0.5),
                             np.exp(lat.log_bias.detach().numpy()), 6.0, 5.0)
    np.testing.assert_allclose(mem2.detach().numpy(), want_u, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(spk.numpy(), poisson_icdf(xi.numpy(), np.exp(mem2.detach().numpy())))


def test_hidden_state_conventions():
    k = 8
    lat = PoissonLatent(k, init_hidden=True, output=True, dtype=torch.float64)
    mem = lat.reset_mem(3)
    assert mem.shape == (3, k) and torch.equal(mem[1], lat.u0)
    spk, mem2 = lat(torch.zeros(3, k), noise=torch.full((3, k), 0.5, dtype=torch.float64))
    assert torch.equal(lat.mem, mem2) and spk.shape == (3, k)
    PoissonLatent.reset_hidden()
    assert torch.equal(lat.mem, lat.u0.expand(3, k))
    with pytest.raises(TypeError, match="init_hidden"):
        lat(torch.zeros(3, k), mem)
    plain = PoissonLatent(k, init_hidden=True)
    assert plain(torch.zeros(2, k)).shape == (2, k)  # spikes only, snntorch style
    with pytest.raises(ValueError, match="channels"):
        PoissonLatent(k)(torch.zeros(2, k + 1), torch.zeros(2, k + 1))


def test_relaxed_mean_tends_to_the_rate_as_temperature_falls():
    gen = torch.Generator().manual_seed(0)
    n, w = 40000, 10
    # rates below, near and beyond the width (the tail term handles r > W)
    rates = torch.tensor([0.05, 0.5, 2.0, 6.0, 25.0], dtype=torch.float64)
    e = torch.empty(n, len(rates), w, dtype=torch.float64).exponential_(generator=gen)
    g = torch.randn(n, len(rates), dtype=torch.float64, generator=gen)
    r = rates.expand(n, -1)
    errors = []
    for temp in (1.0, 0.3, 0.1, 0.01):
        z = relaxed_poisson(r, temp, e, g)
        errors.append((z.mean(0) - rates).abs())
    errors = torch.stack(errors)
    # the bias shrinks with the temperature (same noise at every temperature) ...
    assert torch.all(errors[-1] < errors[0])
    assert errors[0].max() > 0.1
    # ... and at 0.01 the mean is the rate within sampling error (Poisson sd √r / √n)
    se = torch.sqrt(rates / n)
    assert torch.all(errors[-1] < 5 * se + 2e-3), (errors[-1], se)


def test_relaxed_counts_are_differentiable_in_the_rate():
    gen = torch.Generator().manual_seed(3)
    n, w = 20000, 10
    rate = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    e = torch.empty(n, w, dtype=torch.float64).exponential_(generator=gen)
    g = torch.randn(n, dtype=torch.float64, generator=gen)
    z = relaxed_poisson(rate.expand(n), 0.05, e, g).mean()
    z.backward()
    assert abs(float(rate.grad) - 1.0) < 0.1  # d E[z] / d r = 1


def test_relaxed_needs_positive_temperature_and_matching_width():
    with pytest.raises(ValueError, match="temperature"):
        relaxed_poisson(torch.ones(2), 0.0, torch.ones(2, 3))
    lat = PoissonLatent(4, temperature=0.5, width=5)
    with pytest.raises(ValueError, match="width"):
        lat.fire(torch.zeros(2, 4), (torch.ones(2, 4, 3), torch.zeros(2, 4)))


def test_width_rule():
    from scipy.stats import poisson

    for r in (0.1, 5.0, 400.0):
        n = width_needed(r)
        assert poisson.sf(n, r) < 1e-3 <= poisson.sf(n - 2, r)


def test_sparse_relaxed_sampler_equals_the_dense_formula():
    gen = torch.Generator().manual_seed(5)
    n, k, w = 200, 30, 8
    u = torch.empty(n, k, dtype=torch.float64).uniform_(-7, 3, generator=gen)
    e = torch.empty(n, k, w, dtype=torch.float64).exponential_(generator=gen)
    g = torch.randn(n, k, dtype=torch.float64, generator=gen)
    rate = torch.exp(u)
    for temp in (1.0, 0.1, 0.01):
        s = torch.cumsum(e, -1) / rate.unsqueeze(-1)
        dense = torch.sigmoid((1 - s) / temp).sum(-1)
        m = rate * torch.relu(1 - s[..., -1])
        dense = dense + torch.where(m > 0, torch.relu(m + torch.sqrt(m) * g), 0 * m)
        got = relaxed_poisson(rate, temp, DenseNoise(e, g))
        torch.testing.assert_close(got, dense, rtol=0, atol=1e-7 * w)


@pytest.mark.parametrize("kl_form", ["exact", "posterior"])
def test_fused_step_equals_forward_then_kl(kl_form):
    """PoissonLatent.step (one autograd node, hand-written derivatives) = forward + poisson_kl."""
    from neurons.poisson import poisson_kl

    gen = torch.Generator().manual_seed(7)
    n, k, w = 30, 12, 6
    log_bias = torch.empty(k, dtype=torch.float64).normal_(-3, 0.5, generator=gen)
    lat = PoissonLatent(k, log_bias=log_bias, log_eta=-0.3, clamp_u=5.0, clamp_du=4.0, temperature=0.2, width=w,
                        dtype=torch.float64)
    fb0 = torch.empty(n, k, dtype=torch.float64).normal_(0, 4, generator=gen)
    u0 = torch.empty(n, k, dtype=torch.float64).uniform_(-9, 6, generator=gen)  # also < floor
    e = torch.empty(n, k, w, dtype=torch.float64).exponential_(generator=gen)
    g = torch.randn(n, k, dtype=torch.float64, generator=gen)
    weights = [torch.randn(n, k, dtype=torch.float64, generator=gen) for _ in range(2)]
    weights.append(torch.randn(n, dtype=torch.float64, generator=gen))
    results = []
    for fused in (True, False):
        lat.zero_grad()
        fb, u = fb0.clone().requires_grad_(), u0.clone().requires_grad_()
        if fused:
            z, u1, kl, rate = lat.step(fb, u, noise=DenseNoise(e, g), kl_form=kl_form)
            torch.testing.assert_close(rate, torch.exp(u1.detach()))
        else:
            z, u1 = lat(fb, u, noise=(e, g))
            kl = poisson_kl(u1, u, kl_form).sum(1)
        loss = (z * weights[0]).sum() + (u1 * weights[1]).sum() + (kl * weights[2]).sum()
        loss.backward()
        results.append(([z, u1, kl], [fb.grad, u.grad, lat.log_eta.grad, lat.log_bias.grad]))
    (va, ga), (vb, gb) = results
    for a, b in zip(va + ga, vb + gb):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-11)
    assert float((z.detach() > 0.5).double().mean()) > 0.05


def test_fast_paths_change_no_result_bit():
    """The clamps before the sampler's sigmoid and the floor mask of the clamp's slope are
    speed-ups only: the same bits as the plain formulas, in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        x = torch.cat([torch.linspace(-1e7, 1e7, 20001, dtype=dtype),
                       torch.linspace(-900, 900, 200001, dtype=dtype)])
        lo, hi = saturation(dtype)
        assert torch.equal(torch.sigmoid(x.clamp(lo, hi)), torch.sigmoid(x))
        gen = torch.Generator().manual_seed(11)
        v = torch.randn(64, 96, dtype=dtype, generator=gen) * 9
        v[0, :4] = torch.tensor([-8.0, -8.5, 1e4, -1e4], dtype=dtype)
        for c in (2.0, 7.0):
            for w in (v, v.T):  # also a non-contiguous input
                out, slope = clamp_with_slope(w, c)
                y = c - torch.clamp(w, min=-8.0)
                e = torch.exp(y)
                assert torch.equal(out, c - torch.log(e + 1.0))
                assert torch.equal(slope, torch.where(w < -8.0, 0.0, e / (e + 1.0)))


def _plain_clamp(x, c):
    """The clamp as plain torch operations (autograd differentiates it)."""
    return c - torch.nn.functional.softplus(c - torch.clamp(x, min=-8.0))


def test_integrate_equals_autograd_of_the_plain_formula():
    """The neuron's integrate (hand-written local derivatives) = autograd of the formula."""
    gen = torch.Generator().manual_seed(13)
    n, k = 25, 10
    lat = PoissonLatent(k, log_bias=torch.empty(k, dtype=torch.float64).normal_(-3, 1, generator=gen),
                        log_eta=0.4, clamp_u=5.0, clamp_du=4.0, dtype=torch.float64)
    fb0 = torch.empty(n, k, dtype=torch.float64).normal_(0, 6, generator=gen)
    u0 = torch.empty(n, k, dtype=torch.float64).uniform_(-10, 6, generator=gen)  # some < floor
    w = torch.randn(n, k, dtype=torch.float64, generator=gen)
    results = []
    for plain in (False, True):
        lat.zero_grad()
        fb, u = fb0.clone().requires_grad_(), u0.clone().requires_grad_()
        if plain:
            du = _plain_clamp(lat.eta * (fb - lat.bias), lat.clamp_du)
            u1 = _plain_clamp(u + du, lat.clamp_u)
        else:
            u1 = lat.integrate(fb, u)
        (u1 * w).sum().backward()
        results.append([u1.detach(), fb.grad, u.grad, lat.log_eta.grad, lat.log_bias.grad])
    assert float((results[0][2] == 0).double().mean()) > 0.01  # the floor was hit
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    # a prior (K,) potential broadcasts over the batch and gets the summed gradient
    u_prior = lat.u0.detach().clone().requires_grad_()
    lat.integrate(fb0, u_prior).sum().backward()
    want = torch.autograd.grad(_plain_clamp(u_prior.expand(n, k) + _plain_clamp(
        lat.eta * (fb0 - lat.bias), lat.clamp_du), lat.clamp_u).sum(), u_prior)[0]
    torch.testing.assert_close(u_prior.grad, want, rtol=1e-12, atol=1e-13)


def test_relaxed_gradient_equals_autograd_of_the_dense_formula():
    gen = torch.Generator().manual_seed(17)
    n, k, w = 100, 20, 6
    u = torch.empty(n, k, dtype=torch.float64).uniform_(-5, 3, generator=gen)
    e = torch.empty(n, k, w, dtype=torch.float64).exponential_(generator=gen)
    g = torch.randn(n, k, dtype=torch.float64, generator=gen)
    weight = torch.randn(n, k, dtype=torch.float64, generator=gen)
    for temp in (0.8, 0.05):
        grads = []
        for dense in (False, True):
            rate = torch.exp(u).requires_grad_()
            if dense:
                s = torch.cumsum(e, -1) / rate.unsqueeze(-1)
                z = torch.sigmoid((1 - s) / temp).sum(-1)
                m = rate * (1 - s[..., -1])
                z = z + torch.where(m > 0, torch.relu(m + torch.sqrt(m.clamp_min(1e-300)) * g),
                                    0 * m)
            else:
                z = relaxed_poisson(rate, temp, e, g)
            (z * weight).sum().backward()
            grads.append(rate.grad)
        assert grads[1].abs().max() > 0.1
        # the sampler skips arrivals past 1 + 20τ, whose terms are below sigmoid(−20) ≈ 2e-9
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def test_neuron_forward_reproduces_the_fused_unroll():
    """The neuron's integrate/fire, driven step by step with the decoder feedback computed
    here, gives the trajectory of the trainer's fused unroll (float64)."""
    from networks.noise import shared_uniforms
    from train.model import IPVAEModel

    n, k, d, steps = 10, 12, 30, 5
    gen = torch.Generator().manual_seed(19)
    x = torch.rand(n, d, dtype=torch.float64, generator=gen)
    model = IPVAEModel(d, k, seed=1, clamp_u=4.0, clamp_du=3.0, dtype=torch.float64, width=5)
    with torch.no_grad():  # an active regime: latents fire and compete
        model.decoder.phi.normal_(0.0, 0.3, generator=gen)
        model.latent.u0.uniform_(-2.0, 1.0, generator=gen)
    phi, inv_var = model.decoder.phi.detach(), torch.exp(-2 * model.log_sigma.detach())
    lat = model.latent
    for temperature in (0.0, 0.3):
        model.set_schedule(temperature)
        if temperature == 0:
            noise = torch.as_tensor(shared_uniforms(3, steps + 1, n, k))
            event = lambda t: noise[t]  # noqa: E731
        else:
            noise = (torch.empty(steps + 1, n, k, 5, dtype=torch.float64).exponential_(generator=gen),
                     torch.randn(steps + 1, n, k, dtype=torch.float64, generator=gen))
            event = lambda t: (noise[0][t], noise[1][t])  # noqa: E731
        with torch.no_grad():
            out = model(x, steps, noise, keep_trajectory=True)
            u = lat.u0.expand(n, k)
            z = lat.fire(u, event(0))
            us, zs = [u], [z]
            for t in range(steps):
                fb = ((x - z @ phi.T) * inv_var) @ phi
                z, u = lat(fb, u, noise=event(t + 1))
                us.append(u)
                zs.append(z)
        assert 0.05 < float((out["z"] > 0.5).double().mean()) < 0.95
        torch.testing.assert_close(out["u"], torch.stack(us), rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(out["z"], torch.stack(zs), rtol=1e-9, atol=1e-9)


def test_class_docstring_example_runs():
    import doctest

    import neurons.snntorch as module

    finder = doctest.DocTestFinder()
    tests = finder.find(module.PoissonLatent, "PoissonLatent", module=module, globs={})
    runner = doctest.DocTestRunner()
    for t in tests:
        runner.run(t)
    assert runner.tries >= 5 and runner.failures == 0
