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
