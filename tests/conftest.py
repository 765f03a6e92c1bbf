"""Shared fixtures.  With CI=true a missing optional simulator is a failure, never a skip."""
import importlib
import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")


def require(module_name: str):
    """Import ``module_name`` or skip the test; under CI=true a missing module fails it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module_name} is required in CI but cannot be imported: {err}")
        pytest.skip(f"{module_name} not installed: {err}")


@pytest.fixture
def planted():
    """A small planted problem: (net, x (8, 64), codes (8, 128))."""
    from networks import planted_network

    return planted_network(64, 128, 5, seed=0)
