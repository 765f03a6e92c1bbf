"""``make bench --quick``: every benchmark runs at tiny sizes and writes its section of the
results page with finite figures (the code is tested; the timings' values are not)."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
NOT_FINITE = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def sections(page: str) -> dict:
    """{heading: text} of the page's ``## `` sections (``###`` stay inside their section)."""
    parts = re.split(r"^## ", page, flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def table_figures(text: str) -> list[str]:
    """The figures in the cells of the markdown tables of ``text`` (separator rows left out)."""
    figures = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            for cell in line.strip("|").split("|"):
                if NOT_FINITE.search(cell):
                    figures.append("nan")
                figures += NUMBER.findall(cell)
    return figures


def test_table_figures_reads_cells_and_flags_what_is_not_finite():
    page = ("## A\n\n| what | v |\n| --- | ---: |\n| x (D=4) | 1,234.5 |\n| y | 0.35× |\n"
            "## B\n\n| w |\n| --- |\n| nan |\n")
    found = sections(page)
    assert list(found) == ["A", "B"]
    assert table_figures(found["A"]) == ["4", "1,234.5", "0.35"]
    assert "nan" in table_figures(found["B"])


def test_quick_bench_writes_every_section_with_finite_figures(tmp_path):
    for module in ("lava", "brian2", "torch"):  # every section needs its simulator
        require(module)
    out = tmp_path / "results.md"
    env = dict(os.environ, IPVAE_BENCH_RUNS=str(tmp_path / "runs"), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = out.read_text()
    assert page.startswith("# ipvae benchmarks (--quick")
    assert "Machine:" in page and "Python " in page and "numpy " in page
    benches = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    found = sections(page)
    assert len(found) == len(benches), (list(found), benches)
    for heading, text in found.items():
        assert "FAILED" not in heading, text[:3000]
        figures = table_figures(text)
        assert figures, f"section {heading!r} has no table figures"
        values = [float(f.replace(",", "")) for f in figures]
        assert all(math.isfinite(v) for v in values), (heading, figures)


FORKED_PAIR = """
import os, sys, time
import numpy as np
held = np.ones(32 * 2**20 // 8)  # 32 MiB, resident in the parent before the fork
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
sys.stdin.readline()
os.kill(pid, 9)
"""


def test_memory_bench_counts_pages_a_fork_shares_once():
    """The memory verdict's measure: a parent and its fork share a 32 MiB array; RSS counts it
    twice, the resident pages counted once only once.  Where frame numbers are not readable
    (not root), the bench must know it and report PSS instead."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_memory

    if not bench_memory.frames_readable():
        assert not bench_memory._frames(os.getpid()).any()
        return
    pair = subprocess.Popen([sys.executable, "-c", FORKED_PAIR], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        child = int(pair.stdout.readline())
        pids = [pair.pid, child]
        rss = sum(bench_memory._kib(p)[1] for p in pids) / 1024
        once = bench_memory._resident_once_kib(pids) / 1024
        alone = bench_memory._resident_once_kib([pair.pid]) / 1024
    finally:
        pair.communicate("\n", timeout=30)
    assert rss >= alone + 32, (rss, alone)
    assert alone <= once <= alone + 8, (once, alone)
    assert alone >= 32
