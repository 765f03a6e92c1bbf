"""The Brian2 backend's own behaviour: its SpikeMonitor rasters, independent-noise
statistics, its errors, the compiled-code cache and the schedule within a step (agreement
with the reference is in the contract suite, tests/test_backend_contract.py).

Compiled cython code is cached outside the repository and reused between tests
(a cold cache compiles 13 modules once, 1–2 minutes on a busy 2-core machine;
warm runs take ~1–2 s).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from leftovers import marked_processes
from networks import planted_network, simulate

STEPS = 64


@pytest.fixture(scope="module")
def planted_problem():
    """Planted D=64, K=128 network, 2 inputs: 2 × 64 × 128 = 16,384 counts per run."""
    net, x, _ = planted_network(64, 128, 5, seed=0)
    return net, x[:2], simulate(net, x[:2], STEPS, seed=3, offset=5)


def _agreement(a, b):
    assert a.spikes.shape == b.spikes.shape
    return float(np.mean(a.spikes == b.spikes))


def test_spike_monitor_sees_count_events(planted_problem):
    """Each count z becomes z SpikeMonitor events inside its step; totals equal the Trace."""
    b2 = require("brian2")
    from neurons.brian import count_raster_monitor

    net, x, _ = planted_problem
    tr = simulate(net, x[:1], 24, backend="brian2", seed=0, target="numpy")
    counts = tr.spikes[:, 0]
    assert counts.max() > 1  # real multi-spike steps
    mon = count_raster_monitor(counts)
    t = np.asarray(mon.t / b2.ms)
    step = np.floor(t + 1e-9).astype(int)
    totals = np.zeros_like(counts)
    np.add.at(totals, (step, np.asarray(mon.i)), 1)
    np.testing.assert_array_equal(totals, counts)
    assert mon.num_spikes == counts.sum()
    # spread over the step: the events of the busiest neuron-step are evenly spaced in [t, t+1)
    ts, ks = np.unravel_index(np.argmax(counts), counts.shape)
    times = np.sort(t[(step == ts) & (np.asarray(mon.i) == ks)])
    assert len(times) == counts[ts, ks] and times[0] == pytest.approx(ts)
    assert times[-1] < ts + 1 and np.all(np.diff(times) > 0)


def test_independent_noise_statistics_and_perturbation():
    """Named test: independent-noise Brian2 vs reference over 20 trials (networks.compare)."""
    require("brian2")
    from networks.compare import compare_statistics

    net, x, _ = planted_network(64, 128, 5, seed=0)
    trials = 20
    xs = np.repeat(x[:1], trials, axis=0)  # 20 trials of one input, each its own noise
    ref = simulate(net, xs, 48, seed=0)
    ind = simulate(net, xs, 48, backend="brian2", seed=123, target="numpy",
                   independent_noise=True)
    assert not ind.info["shared_noise"]
    assert _agreement(ind, ref) < 0.99  # really different noise
    same = compare_statistics({"reference": ref, "brian2": ind})["pairs"]["reference|brian2"]
    assert same["rate_correlation"] >= 0.95
    assert same["passed"], same

    perturbed = type(net)(**{**net.__dict__, "log_eta": net.log_eta + np.log(2.0)})
    other = simulate(perturbed, xs, 48, backend="brian2", seed=123, target="numpy",
                     independent_noise=True)
    diff = compare_statistics({"reference": ref, "brian2": other})["pairs"]["reference|brian2"]
    assert not diff["passed"], diff


def test_errors(planted_problem, monkeypatch):
    require("brian2")
    net, x, _ = planted_problem
    with pytest.raises(ValueError, match="code-generation target"):
        simulate(net, x, 4, backend="brian2", target="fortran")
    with pytest.raises(ValueError, match="independent_noise"):
        simulate(net, x, 4, backend="brian2", target="numpy", independent_noise=True,
                 noise=np.full((4, 2, 128), 0.5))
    monkeypatch.setitem(sys.modules, "brian2", None)
    with pytest.raises(ImportError, match="brian2"):
        simulate(net, x, 4, backend="brian2", target="numpy")


def test_cython_fallback_without_compiler(planted_problem, monkeypatch):
    require("brian2")
    import networks.brian as nb

    net, x, ref = planted_problem
    monkeypatch.setitem(nb._STATE, "cython_ok", False)
    with pytest.warns(RuntimeWarning, match="falling back to the numpy target"):
        tr = simulate(net, x[:1], 8, backend="brian2", seed=3, offset=5)
    assert tr.info["target"] == "numpy"
    np.testing.assert_array_equal(tr.spikes, ref.spikes[:8, :1])


def test_compiled_cache_outside_repository(planted_problem, tmp_path, monkeypatch):
    b2 = require("brian2")
    import networks.brian as nb

    repo = nb.REPO_ROOT
    before = _repo_files(repo)
    net, x, _ = planted_problem
    simulate(net, x[:1], 4, backend="brian2", target="cython")
    cache = Path(b2.prefs.codegen.runtime.cython.cache_dir).resolve()
    assert cache == nb.cache_dir() and repo not in cache.parents
    assert any(cache.glob("*.so")) or nb.resolve_target("cython") == "numpy"
    assert _repo_files(repo) == before  # nothing compiled into the tree
    # a cache location inside the repository is refused in favour of a temporary folder
    monkeypatch.delenv("IPVAE_BRIAN2_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(repo / "cache"))
    fallback = nb.cache_dir()
    assert repo not in fallback.parents and fallback != repo
    assert not (repo / "cache").exists()
    monkeypatch.setenv("IPVAE_BRIAN2_CACHE", str(tmp_path / "c"))
    assert nb.cache_dir() == (tmp_path / "c").resolve()


COMPILED = (".so", ".pyx", ".cpp", ".o", ".lock", ".pyd", ".c")


def _repo_files(repo):
    """Compiled-code artefacts anywhere in the repository tree (other files change under
    other people's hands while tests run)."""
    out = set()
    for root, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git")]
        out.update(os.path.join(root, f) for f in files
                   if f.endswith(COMPILED) or f.startswith(("_cython_magic", "brian")))
    return out


def test_cpp_standalone_needs_compiler(planted_problem, monkeypatch):
    require("brian2")
    import networks.brian as nb

    net, x, _ = planted_problem
    monkeypatch.setattr(nb.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        simulate(net, x, 4, backend="brian2", target="cpp_standalone")


def test_cpp_standalone_builds_in_a_temporary_folder_it_removes(planted_problem):
    """Compiles a small C++ project; its agreement with the reference is in the contract suite."""
    require("brian2")
    net, x, ref = planted_problem
    before = set(Path(tempfile.gettempdir()).glob("ipvae-brian2-standalone-*"))
    tr = simulate(net, x[:1], 8, backend="brian2", seed=3, offset=5, target="cpp_standalone")
    np.testing.assert_array_equal(tr.spikes, ref.spikes[:8, :1])
    # nothing of ours is left (other runs on the machine may remove theirs meanwhile)
    assert set(Path(tempfile.gettempdir()).glob("ipvae-brian2-standalone-*")) - before == set()
    # runtime targets still work afterwards (the device is reset)
    again = simulate(net, x[:1], 8, backend="brian2", seed=3, offset=5, target="numpy")
    np.testing.assert_array_equal(again.spikes, ref.spikes[:8, :1])


def test_schedule_within_a_step():
    """New input → fire → threshold → count monitor → event-driven feedback → integrate → u monitor."""
    b2 = require("brian2")
    import networks.brian as nb

    net, _, _ = planted_network(10, 6, 2, seed=0)
    nb._configure(b2, "numpy")
    objs = nb.build(b2, net, 5, 1)
    objs["network"].run(0 * b2.ms, namespace={})  # a network that was never run warns
    names = [o.name for o in objs["network"].sorted_objects]
    expected = ["latents_new_input", "latents_fire", "latents_spike_thresholder", "counts",
                "feedback_pre", "latents_integrate", "potentials"]
    assert [n for n in names if n in expected] == expected
    assert objs["synapses"].N[:] == 36  # all-to-all, self-connections included
    w = net.recurrent_weights()
    np.testing.assert_array_equal(objs["synapses"].w[:], w[objs["synapses"].j[:],
                                                           objs["synapses"].i[:]])


# A Brian2 run started from a script file (Brian2 then also keeps a copy of it).
RUN_SCRIPT = textwrap.dedent("""
    import sys
    from networks import planted_network, simulate
    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    simulate(net, x, int(sys.argv[2]), backend="brian2", target=sys.argv[1], record=[])
""")


def _running(mark: str, names) -> bool:
    """True while a process started by the marked run and named one of ``names`` runs."""
    for pid in marked_processes(mark):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in names:
                return True
        except OSError:
            continue
    return False



def _end_run(proc, mark):
    """End a test's Brian2 run however the test went: no compiler or program left running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stderr.close()
    for pid in marked_processes(mark):
        os.kill(pid, signal.SIGKILL)

def _sigterm_leaves_nothing(tmp_path, target, steps, started):
    """Start a Brian2 run, wait for ``started(mark, tmpdir)``, SIGTERM it: it ends at once, by
    the signal, and leaves no process and no file in its temporary or working folder."""
    mark = uuid.uuid4().hex
    tmpdir = Path(tempfile.mkdtemp(prefix="ipvb-"))  # TMPDIR of the run: must end empty
    work = tmp_path / "work"  # its working folder: must stay empty
    work.mkdir()
    script = tmp_path / "run_brian2.py"
    script.write_text(RUN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               TMPDIR=str(tmpdir), IPVAE_LAVA_TEST_MARK=mark)
    proc = subprocess.Popen([sys.executable, str(script), target, str(steps)], env=env,
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not started(mark, tmpdir):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the Brian2 run did not reach the stage"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)  # at once: not after the compiler has finished on its own
        assert proc.returncode == -signal.SIGTERM
        assert "Traceback" not in proc.stderr.read().decode()
        deadline = time.monotonic() + 10
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marked_processes(mark) == []
        assert sorted(p.name for p in tmpdir.iterdir()) == []
        assert sorted(p.name for p in work.iterdir()) == []
    finally:
        _end_run(proc, mark)
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.parametrize("stage", [("g++", "cc1plus"), ("make",)],
                         ids=["compiler-flag-test", "make"])
def test_sigterm_during_cpp_standalone_build_leaves_nothing(tmp_path, stage):
    """SIGTERM while g++ compiles (Brian2's test of compiler flags, then make): no make or g++
    left running, no build folder, none of Brian2's files (debug log, script copy,
    redirected compiler output) nor g++'s temporary files."""
    require("brian2")
    _sigterm_leaves_nothing(tmp_path, "cpp_standalone", 20,
                            lambda mark, tmpdir: _running(mark, stage))


def test_sigterm_during_a_runtime_run_leaves_nothing(tmp_path):
    """SIGTERM while a cython-target run steps: Brian2's files (which it removes only at
    interpreter exit) go too."""
    require("brian2")

    def stepping(mark, tmpdir):  # Brian2 imported (its debug log exists), then 2 s into the run
        if not list(tmpdir.glob("brian_debug_*")):
            return False
        stepping.since = getattr(stepping, "since", time.monotonic())
        return time.monotonic() > stepping.since + 2

    _sigterm_leaves_nothing(tmp_path, "cython", 10**6, stepping)


# A cpp_standalone run whose parent is SIGKILLed; "program" replaces the compiled program by
# a stand-in that would run for five minutes unless killed.
SIGKILL_SCRIPT = textwrap.dedent("""
    import sys
    import brian2
    from networks import planted_network, simulate
    if sys.argv[1] == "program":
        brian2.prefs.devices.cpp_standalone.run_cmd_unix = ["sh", "-c", "sleep 300", "main"]
    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    simulate(net, x, 20, backend="brian2", target="cpp_standalone", record=[])
""")


def _tree_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


@pytest.mark.parametrize("stage, names", [("make", ("make", "cc1plus")),
                                          ("program", ("sleep",))], ids=["make", "program"])
def test_sigkill_of_the_parent_leaves_no_process(tmp_path, stage, names):
    """SIGKILL the Python process while make compiles (make and a compiler running), or
    while the compiled program runs: within 5 s no process of the run is left (make,
    compilers, program, watchdog; the watchdog polls every 0.5 s), and the build folder
    no longer grows.  The watchdog removes the folder just before it kills the group, so
    a file a compiler writes meanwhile can keep it (not seen in practice); Brian2's own
    files in the temporary folder (its debug log, the script copy) stay: only the
    interpreter's exit removes them, and SIGKILL skips it."""
    require("brian2")
    mark = uuid.uuid4().hex
    tmpdir = tmp_path / "tmp"  # TMPDIR of the run: the build folder is made here
    tmpdir.mkdir()
    script = tmp_path / "run_brian2.py"
    script.write_text(SIGKILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               TMPDIR=str(tmpdir), IPVAE_LAVA_TEST_MARK=mark)
    proc = subprocess.Popen([sys.executable, str(script), stage], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not all(_running(mark, (name,)) for name in names):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"the Brian2 run did not reach {names}"
            time.sleep(0.05)
        builds = list(tmpdir.glob("ipvae-brian2-standalone-*"))
        assert len(builds) == 1
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked_processes(mark) == []
        size = _tree_bytes(builds[0])  # 0 once the watchdog has removed it
        time.sleep(1.0)
        assert _tree_bytes(builds[0]) == size
    finally:
        _end_run(proc, mark)


def test_runtime_holds_one_block_of_noise_and_records(planted_problem, monkeypatch):
    """Blocks of 7 steps (not dividing T) and chunks of 2 inputs: the noise ring is refilled
    and the monitors emptied across input and chunk boundaries, with the reference's counts
    under shared and explicit noise and with record=; the run holds one block, never T steps."""
    require("brian2")
    import networks.brian as nb

    net, _, _ = planted_problem
    _, x, _ = planted_network(64, 128, 5, seed=0, n_inputs=3)
    k, steps = net.n_latents, 30
    monkeypatch.setattr(nb, "BLOCK_VALUES", 7 * k)
    monkeypatch.setattr(nb, "CHUNK_VALUES", 2 * steps * k)
    built = []
    build = nb.build
    monkeypatch.setattr(nb, "build", lambda *a, **kw: built.append(build(*a, **kw)) or built[-1])
    noise = np.random.default_rng(1).random((steps, 3, k))
    for kw in (dict(seed=3, offset=5), dict(seed=3, offset=5, record=[0, 6, 7, 29]),
               dict(noise=noise)):
        ref = simulate(net, x, steps, **kw)
        tr = simulate(net, x, steps, backend="brian2", target="numpy", **kw)
        np.testing.assert_array_equal(tr.spikes, ref.spikes)
        np.testing.assert_allclose(tr.u, ref.u, rtol=0, atol=1e-9)
        np.testing.assert_allclose(tr.step_rate, ref.step_rate, rtol=1e-12)
        objs = built[-1]
        assert objs["noise_table"].shape == (7, k)  # one block of steps, not T or N·T
        assert objs["u_monitor"].variables["u"].get_value().shape[0] == 0  # all moved out
        assert len(objs["z_monitor"].variables["i"].get_value()) == 0


LEAN_IMPORT_SCRIPT = textwrap.dedent("""
    import sys
    if sys.argv[1] == "matplotlib-first":
        import matplotlib
    from networks import planted_network, simulate
    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    simulate(net, x, 4, backend="brian2", target="numpy")
    import brian2
    skipped = [m for m in ("pylab", "matplotlib", "pytest") if m in sys.modules]
    print(" ".join(skipped) or "-", hasattr(brian2, "plot"))
    import matplotlib.pyplot  # importable again as usual
""")


@pytest.mark.parametrize("first, expected", [("nothing", "- False"),
                                             ("matplotlib-first", "pylab matplotlib pytest True")])
def test_brian2_is_imported_without_its_interactive_extras(first, expected):
    """The backend imports Brian2 without pylab, matplotlib and pytest (Brian2's own path
    when they are missing); a process that loaded matplotlib first gets Brian2's full
    import, and either way matplotlib stays importable."""
    require("brian2")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", LEAN_IMPORT_SCRIPT, first], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected
