"""The Lava backend's own behaviour: a user's own graph, process isolation and clean-up, the
model's noise stream (agreement with the reference, batches and explicit noise are in the
contract suite, tests/test_backend_contract.py).

Every test needs lava-nc (``require("lava")``): skipped without it, failed under CI=true.
"""
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from leftovers import leaked_shared_memory, marked_processes, shm_names

from networks import planted_network, simulate
from networks.noise import shared_uniforms

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ("folded", "error-units")


def _run_script(path: Path, text: str, *args) -> None:
    """Write ``text`` to ``path`` and run it with ``args`` in a fresh Python (the repository
    on its path, its own session): Lava is imported there, never in the test process."""
    path.write_text(text)
    done = subprocess.run([sys.executable, str(path), *map(str, args)],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=240, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]


USER_GRAPH = textwrap.dedent("""
    import sys, numpy as np
    from networks import load_network
    from lava.proc.io.source import RingBuffer
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.run_conditions import RunSteps
    from neurons.lava.ipvae_net.process import IPVAENet

    net_path, x_path, out_path, T, seed = sys.argv[1:6]
    net, x, T, seed = load_network(net_path), np.load(x_path), int(T), int(seed)
    rasters = {}
    for topology in ("folded", "error-units"):
        # --- the README example ---
        src = RingBuffer(data=x[:, None])                       # x, constant in time
        ipvae = IPVAENet(net, steps=T, topology=topology, seed=seed)
        out = Extractor(shape=(net.n_latents,), buffer_size=ipvae.period)
        src.s_out.connect(ipvae.x_in)
        ipvae.s_out.connect(out.in_port)
        cfg = Loihi2SimCfg(select_tag="floating_pt", select_sub_proc_model=True,
                           exception_proc_model_map={Extractor: PyLoihiExtractorModel})
        ipvae.run(RunSteps(ipvae.period), cfg)
        raster = np.array([out.receive() for _ in range(ipvae.period)])[ipvae.spike_steps]
        # ---
        rasters[topology] = raster
        rasters[topology + "_u"] = ipvae.u.get()    # the exposed Var: u_T after one period
        ipvae.stop()
    np.savez(out_path, **rasters)
""")


def test_user_graph_reproduces_simulate(planted, tmp_path):
    """RingBuffer → IPVAENet → Extractor, built by hand: simulate's raster (both topologies)."""
    require("lava")
    from networks import save_network

    net, x, _ = planted
    steps, seed, sample = 30, 4, 2
    save_network(net, tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", x[sample])
    _run_script(tmp_path / "user_graph.py", USER_GRAPH, tmp_path / "net.npz",
                tmp_path / "x.npy", tmp_path / "out.npz", steps, seed)
    ref = simulate(net, x[sample], steps, seed=seed)
    lava = simulate(net, x[sample], steps, backend="lava", seed=seed)
    np.testing.assert_array_equal(lava.spikes, ref.spikes)
    with np.load(tmp_path / "out.npz") as got:
        for topology in TOPOLOGIES:
            np.testing.assert_array_equal(got[topology].astype(np.int64), ref.spikes[:, 0])
            np.testing.assert_allclose(got[topology + "_u"], ref.u[-1, 0], rtol=0, atol=1e-9)
    assert ref.spikes.sum() > 0


def _child_pids() -> set[int]:
    """Direct children of this (test) process."""
    me = str(os.getpid())
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                kids.add(int(entry.name))
    return kids


@pytest.fixture
def tiny():
    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    return net, x


def test_model_failure_is_a_clear_error_and_leaves_nothing_behind(tiny, monkeypatch):
    """A model forced to raise (test hook): RuntimeError within the timeout, 20× in a row,
    and afterwards no process of the run and no shared-memory segment of it is left."""
    require("lava")
    net, x = tiny
    mark = uuid.uuid4().hex
    monkeypatch.setenv("IPVAE_LAVA_TEST_MARK", mark)
    monkeypatch.setenv("IPVAE_LAVA_FAIL_AT", "3")
    timeout = 60.0
    kids_before, shm_before = _child_pids(), shm_names()
    for topology in TOPOLOGIES * 10:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="forced failure at Lava time step 3"):
            simulate(net, x, 5, backend="lava", topology=topology, timeout=timeout)
        assert time.monotonic() - start < timeout
        assert marked_processes(mark) == []
        assert _child_pids() == kids_before
    # The killed runtime's shared-memory channels are unlinked too.
    assert leaked_shared_memory(shm_before) == set()


def test_timeout_kills_the_run(tiny, monkeypatch):
    """A run longer than its timeout: RuntimeError naming the timeout, no process left."""
    require("lava")
    net, x = tiny
    mark = uuid.uuid4().hex
    monkeypatch.setenv("IPVAE_LAVA_TEST_MARK", mark)
    shm_before = shm_names()
    with pytest.raises(RuntimeError, match="timed out after 0.5 s"):
        simulate(net, x, 100_000, backend="lava", timeout=0.5)
    assert marked_processes(mark) == []
    assert leaked_shared_memory(shm_before) == set()


def test_bad_requests_fail_on_the_host_before_any_process(planted, monkeypatch):
    """Unknown topology, wrong input size, missing lava: one clear error, no child started."""
    require("lava")
    import networks.lava as backend

    net, x, _ = planted

    def no_child(*args, **kwargs):
        raise AssertionError("a child process was started")

    monkeypatch.setattr(backend.subprocess, "Popen", no_child)
    with pytest.raises(ValueError, match="unknown lava topology 'ring'"):
        simulate(net, x, 4, backend="lava", topology="ring")
    with pytest.raises(ValueError, match=r"expects \(N, 64\)"):
        simulate(net, x[:, :10], 4, backend="lava")
    with pytest.raises(ValueError, match=r"expects \(N, 64\)"):
        backend.run(net, x[:, :10], 4)
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="Python 3.10"):
        simulate(net, x, 4, backend="lava")


def test_parent_never_imports_lava_runtime(planted, tmp_path):
    """simulate(backend='lava') leaves Lava's runtime out of the calling process."""
    require("lava")
    code = textwrap.dedent("""
        import sys
        from networks import planted_network, simulate
        net, x, _ = planted_network(8, 6, 2, seed=0, n_inputs=2)
        trace = simulate(net, x, 3, backend="lava")
        assert trace.spikes.shape == (3, 2, 6)
        print(sorted(m for m in sys.modules if m.startswith("lava.")))
    """)
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_model_noise_stream_is_the_shared_stream():
    """The Philox stream the latent model draws K at a time == networks.noise's (t, k) order."""
    require("lava")
    xi = shared_uniforms(7, 5, 2, 9, offset=3)
    for n in range(2):
        g = np.random.Generator(np.random.Philox(key=[7, 3 + n]))
        np.testing.assert_array_equal(np.stack([g.random(9) for _ in range(5)]), xi[:, n])


DENSE_GRAPH = textwrap.dedent("""
    import sys, numpy as np
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.run_conditions import RunSteps
    from neurons.lava.dense_events import PyDenseEventModelFloat

    w, s, out_path = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
    got = {}
    for name, models in (("lava", {}), ("events", {Dense: PyDenseEventModelFloat})):
        src = RingBuffer(data=s)
        dense = Dense(weights=w, num_message_bits=8)
        src.s_out.connect(dense.s_in)
        dense.a_out.flag_external_pipe(s.shape[1])
        dense.run(RunSteps(s.shape[1], blocking=False),
                  Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=models))
        got[name] = np.array([dense.a_out.external_pipe_csp_recv_port.recv()
                              for _ in range(s.shape[1])])
        dense.wait()
        got[name + "_weights"] = dense.weights.get()
        dense.stop()
    np.savez(out_path, **got)
""")


@pytest.mark.parametrize("k_post", [7, 150])
def test_event_driven_dense_matches_lavas_dense(tmp_path, k_post):
    """``neurons.lava.dense_events``: the same a_out as Lava's PyDenseModelFloat, step by
    step, for graded counts whose share of nonzeros crosses the switch to the dense
    product (silent, sparse, dense and full steps), a non-symmetric W, non-square (copied
    transposed) and square (transposed in place, more than two tiles), and the ``weights``
    Var read back unchanged."""
    require("lava")
    from neurons.lava import DENSE_SHARE  # constants only: the test process never imports Lava

    rng = np.random.default_rng(5)
    k_pre, steps = 150, 12
    w = rng.normal(size=(k_post, k_pre))
    shares = np.linspace(0.0, 1.0, steps)
    s = np.where(rng.random((k_pre, steps)) < shares, rng.integers(1, 6, (k_pre, steps)), 0)
    nonzero = (s != 0).mean(axis=0)
    assert (nonzero == 0).any() and (nonzero <= DENSE_SHARE).sum() >= 3
    assert (nonzero > DENSE_SHARE).sum() >= 3
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "s.npy", s.astype(np.int32))
    _run_script(tmp_path / "dense.py", DENSE_GRAPH, tmp_path / "w.npy", tmp_path / "s.npy",
                tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as got:
        # a_out at step j is the accumulation of step j - 1's input (0 at the first step);
        # two sums of k_pre products in any order differ by at most 2·k_pre·eps·Σ|w s|
        def previous(a):
            return np.vstack([np.zeros(k_post), a.T[:-1]])

        expected = previous(w @ s)
        bound = previous(2 * k_pre * np.finfo(float).eps * (np.abs(w) @ np.abs(s)))
        assert np.all(np.abs(got["lava"] - expected) <= bound)
        assert np.all(np.abs(got["events"] - got["lava"]) <= bound)
        np.testing.assert_array_equal(got["events_weights"], w)
        assert np.abs(got["events"]).sum() > 0
