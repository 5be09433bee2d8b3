"""The wheel installs under one name, beside Hugging Face `datasets`, in a fresh environment.

Before livegate's modules moved under `livegate.*`, installing Hugging Face `datasets` overwrote
site-packages/datasets/ and `livegate --version` ran its code. This test builds the wheel, installs it
with `datasets` into a new virtual environment (from the package registry, as CI can), and runs both.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging


def _run(*cmd, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _checked(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _checked(_run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ROOT, "-w", out))
    return next(out.glob("livegate-*.whl"))


def test_wheel_installs_nothing_outside_the_livegate_name(wheel):
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"livegate"}


def test_livegate_and_hugging_face_datasets_work_in_one_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    _checked(_run(sys.executable, "-m", "venv", venv))
    python = venv / "bin" / "python"
    _checked(_run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, "datasets"))
    # run from an empty folder: nothing of the checkout may be imported
    imports = _checked(_run(python, "-c", "import datasets, livegate, livegate.datasets as lg; "
                                          "print(datasets.Dataset.__module__, lg.__name__, livegate.__version__)",
                            cwd=tmp_path))
    assert imports.split()[:2] == ["datasets.arrow_dataset", "livegate.datasets"]
    demo = _run(venv / "bin" / "livegate", "--quiet", "demo", "--out", tmp_path / "demo", "--n-rounds", "5000",
                cwd=tmp_path)
    _checked(demo)
    assert "gate: " in demo.stdout and (tmp_path / "demo" / "report.html").is_file()
    assert _checked(_run(python, "-m", "livegate", "--version", cwd=tmp_path)).startswith("livegate ")
