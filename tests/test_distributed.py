"""``ipvae evaluate`` / ``ipvae simulate`` under torchrun: shards by index, one process's numbers.

One torchrun job of 2 processes (gloo, CPU) runs this file as a script
(``_driver``): it calls ``ipvae.cli.main`` (what ``torchrun -m ipvae CMD ...``
runs) for several commands in one process group, since every torchrun start
costs three torch imports: an evaluation with the probe split unevenly, simulate
with uneven splits, more processes than inputs, an error on rank 0.  Their
outputs are compared with one-process runs made here.  The literal
``torchrun -m ipvae evaluate`` runs in ``benchmarks/bench_distributed.py``.
Plus the shard arithmetic and the gathering helpers without torchrun.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
DIGITS_NET = ROOT / "tests" / "data" / "trained_digits_k64.npz"
EVAL_ARGS = [str(DIGITS_NET), "--data", "digits", "--n-inputs", "21", "--steps", "30",
             "--probe-n", "30", "--probe-step", "5", "--probe-step", "30", "--batch", "4",
             "--quiet"]

# The driver's jobs: (name, ipvae argv after the network); {planted} / {digits} are networks.
SIMULATE_CASES = {
    # planted network: event-driven feedback, every float per input independent of the split
    "planted-uneven": ["{planted}", "--data", "planted", "--n", "7", "--offset", "3",
                       "--steps", "20", "--quiet"],
    "planted-one-input": ["{planted}", "--data", "planted", "--n", "1", "--steps", "20",
                          "--quiet"],
    # trained network: dense feedback product (BLAS), see test_simulate_...
    "digits-uneven": ["{digits}", "--data", "digits", "--n", "5", "--offset", "2",
                      "--steps", "20", "--quiet"],
}
EVAL_BAD = ["{digits}", "--data", "digits", "--n", "3", "--steps", "12", "--probe-step", "99",
            "--quiet"]


def _fill(argv, nets):
    return [a.format(**nets) for a in argv]


def _driver(out: str) -> int:
    """Under torchrun: every job above in one process group; each rank writes its exit codes."""
    from networks.distributed import rank_world

    from ipvae.cli import main

    out = Path(out)
    nets = dict(planted=str(out / "planted.npz"), digits=str(DIGITS_NET))
    codes = {"eval": main(["evaluate", *EVAL_ARGS, "--out", str(out / "eval-2")])}
    for name, argv in SIMULATE_CASES.items():
        codes[name] = main(["simulate", *_fill(argv, nets), "--out", str(out / f"{name}-2.npz")])
    codes["eval-bad"] = main(["evaluate", *_fill(EVAL_BAD, nets), "--out", str(out / "bad")])
    rank, _ = rank_world()
    (out / f"codes-{rank}.json").write_text(json.dumps(codes))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, cwd, nproc=2, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    cmd = [str(TORCHRUN), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)


# --- without processes -------------------------------------------------------------------------
def test_shards_are_contiguous_near_equal_and_cover_every_index_once():
    from networks.distributed import shard

    for n in (0, 1, 2, 5, 21, 100):
        for world in (1, 2, 3, 7):
            for unit in (1, 4, 100):
                r = [shard(n, k, world, unit) for k in range(world)]
                assert r[0][0] == 0 and r[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(r, r[1:]))  # contiguous, in order
                sizes = [hi - lo for lo, hi in r]
                assert all(lo % unit == 0 for lo, hi in r if hi > lo)  # whole units
                units = [-(-s // unit) for s in sizes]
                assert max(units) - min(units) <= 1 and units == sorted(units, reverse=True)
    assert [shard(21, k, 2) for k in range(2)] == [(0, 11), (11, 21)]
    assert [shard(21, k, 2, 4) for k in range(2)] == [(0, 12), (12, 21)]
    assert [shard(2, k, 3) for k in range(3)] == [(0, 1), (1, 2), (2, 2)]  # rank 2: nothing
    with pytest.raises(ValueError, match="rank < world"):
        shard(5, 2, 2)


def test_without_torchrun_map_shards_is_one_plain_call():
    from networks.distributed import lead_or_serve, map_shards, rank_world, release

    assert rank_world() == (0, 1)
    assert lead_or_serve(lambda a, world: (a, world), "args") == ("args", 1)
    got = map_shards(lambda x, offset, scale: (x * scale, offset), np.arange(5), offset=7,
                     scale=2)
    assert len(got) == 1 and got[0][1] == 7 and list(got[0][0]) == [0, 2, 4, 6, 8]
    release()  # nothing to release


def test_concat_traces_of_shards_equals_one_run(planted):
    from networks import simulate
    from networks.distributed import concat_traces, shard, simulate_shard

    net, x, _ = planted
    whole = simulate(net, x, 15, seed=4, offset=10, record=[0, 7, 14], rate_metrics=True)
    parts = [simulate_shard(net=net, x=x[lo:hi], steps=15, seed=4, offset=10 + lo,
                            record=[0, 7, 14], rate_metrics=True)
             for lo, hi in (shard(len(x), k, 3) for k in range(3))]
    joined = concat_traces(parts, world=3)
    for k in ("x", "steps", "spikes", "u", "recon", "step_mse", "step_zeros", "step_rate"):
        np.testing.assert_array_equal(getattr(joined, k), getattr(whole, k), err_msg=k)
    # the rate read-out Φe^u is one BLAS product per batch: equal to rounding
    np.testing.assert_allclose(joined.step_rate_mse, whole.step_rate_mse, rtol=1e-14)
    assert joined.info["offset"] == 10 and joined.info["processes"] == 3
    # counters of steps per row block are summed over the shards' blocks
    assert joined.info["feedback_steps"] == {
        k: sum(p["info"]["feedback_steps"][k] for p in parts) for k in ("event-driven", "dense")}


# --- under torchrun ----------------------------------------------------------------------------
def test_torchrun_evaluate_and_simulate_give_one_process_results(tmp_path):
    from networks import Trace
    from networks.planted import planted_network
    from networks.network import save_network

    from ipvae.cli import main

    save_network(planted_network(64, 128, 5, seed=2)[0], tmp_path / "planted.npz")
    done = _torchrun([str(Path(__file__).resolve()), str(tmp_path)], cwd=tmp_path)
    nets = dict(planted=str(tmp_path / "planted.npz"), digits=str(DIGITS_NET))
    codes = [json.loads((tmp_path / f"codes-{r}.json").read_text()) for r in range(2)]
    # rank 0 returned each command's exit status; the serving rank 1 always 0
    assert codes[0] == {"eval": 0, **{k: 0 for k in SIMULATE_CASES}, "eval-bad": 2}
    assert set(codes[1].values()) == {0}
    assert not (tmp_path / "bad").exists()
    # only rank 0 prints (and writes): one line per file written
    assert done.stdout.count("wrote ") == 1 + len(SIMULATE_CASES)
    assert "--probe-step 99 is past --steps 12" in done.stderr

    # 21 inputs in chunks of 4: 3 chunks (12 inputs) on rank 0, 3 (9) on rank 1.  Every
    # number is the same float (the probe is fitted on the gathered latents by rank 0).
    assert main(["evaluate", *EVAL_ARGS, "--out", str(tmp_path / "eval-1")]) == 0
    one, two = (json.loads((tmp_path / f"eval-{p}" / "evaluation.json").read_text())
                for p in (1, 2))
    assert two == one
    assert one["n_inputs"] == 21 and one["probe"]["n_train"] == 30
    assert len(one["probe"]["rates"]) == 2

    for name, argv in SIMULATE_CASES.items():
        out = str(tmp_path / f"{name}-1.npz")
        assert main(["simulate", *_fill(argv, nets), "--out", out]) == 0
        one, two = (Trace.load(tmp_path / f"{name}-{p}.npz") for p in (1, 2))
        assert two.info["processes"] == 2 and two.info["offset"] == one.info["offset"]
        # counts, read-out and spike metrics: identical in any split
        for k in ("x", "steps", "spikes", "recon", "step_mse", "step_zeros"):
            np.testing.assert_array_equal(getattr(two, k), getattr(one, k),
                                          err_msg=f"{name} {k}")
        if name.startswith("planted"):
            for k in ("u", "step_rate"):
                np.testing.assert_array_equal(getattr(two, k), getattr(one, k),
                                              err_msg=f"{name} {k}")
        else:
            # The dense feedback product Φᵀe goes through BLAS, whose kernel for the last
            # rows of a block (count mod its unroll) rounds differently: potentials agree
            # to rounding (design §2.1), counts exactly.
            assert two.info["feedback_steps"]["dense"] > 0
            np.testing.assert_allclose(two.u, one.u, rtol=0, atol=1e-12)


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1]))
