"""The Makefile finds a Python 3.10 by itself, or says clearly that there is none."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path):
    """The Makefile and every file its install stamp depends on, in a folder of their own."""
    rule = re.search(r"^\$\(STAMP\):(.*?)\n\t", (ROOT / "Makefile").read_text(), re.S | re.M)
    deps = rule.group(1).replace("\\\n", " ").split()
    for name in ["Makefile", *deps]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _make(cwd, target, **env):
    return subprocess.run(["make", "-s", target], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=120)


def test_no_python310_fails_with_a_clear_message(project_copy, tmp_path):
    proc = _make(project_copy, "venv", HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "none"))
    assert proc.returncode != 0
    assert "no Python 3.10 found" in proc.stderr
    assert not (project_copy / ".venv").exists()


def _base_python310() -> Path:
    """The Python 3.10 this suite's virtualenv was made from."""
    exe = Path(sys.base_prefix) / "bin" / "python3.10"
    assert exe.exists(), f"the suite must run on Python 3.10, found {sys.version}"
    return exe


def _found(proc):
    assert proc.returncode == 0, proc.stderr
    found = proc.stdout.strip()
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("Python 3.10")
    return found


def test_finds_python310_on_path_first(project_copy, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3.10").symlink_to(_base_python310())
    proc = _make(project_copy, "which-python", PATH=f"{bindir}:/usr/bin:/bin",
                 HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "none"))
    assert _found(proc) == str(bindir / "python3.10")


def test_finds_python310_in_pyenv_versions_when_the_shim_does_not_work(project_copy, tmp_path):
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3.10").write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    (shims / "python3.10").chmod(0o755)
    version_bin = tmp_path / "pyenv" / "versions" / "3.10.99" / "bin"
    version_bin.mkdir(parents=True)
    (version_bin / "python3.10").symlink_to(_base_python310())
    proc = _make(project_copy, "which-python", PATH=f"{shims}:/usr/bin:/bin",
                 HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "pyenv"))
    assert _found(proc) == str(version_bin / "python3.10")
