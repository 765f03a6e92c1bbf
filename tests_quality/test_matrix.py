"""The training-quality matrix of issue 16 (``make quality``): see ``tests_quality/matrix.py``.

Each cell trains under its time budget (3 minutes on MNIST, 10 on patches; 2 threads) and is
evaluated to t = 1000 on held-out inputs; after each cell the table
``runs/quality/matrix.md`` and the figure ``runs/quality/matrix.png`` are rewritten with every
cell measured so far, so a failing cell is in the table too.  ``IPVAE_QUALITY_REUSE=1``
re-checks the cells already measured without training them again.
"""
import os

import pytest

import neurons  # noqa: F401  (OMP_WAIT_POLICY before torch)
from tests_quality.matrix import CELLS, run_cell, write_report


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_matrix_cell_learns(cell):
    res = run_cell(cell, reuse=os.environ.get("IPVAE_QUALITY_REUSE") == "1")
    table = write_report()
    print(f"\n{cell.name}: R² t={cell.t_train} {res['r2_t_train']:.3f}, t=160 "
          f"{res['r2_160']:.3f}, t=1000 {res['r2_end']:.3f}; sparsity t=16 "
          f"{res['sparsity_16']:.3f} → t=1000 {res['sparsity_end']:.3f}; {res['epochs']} epochs "
          f"in {res['train_minutes']:.1f} min; table {table}")
    assert res["train_minutes"] <= cell.minutes + 1.0      # trained within its budget
    assert not res["failures"], res["failures"]
