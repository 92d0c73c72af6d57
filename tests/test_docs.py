"""The documentation builds with warnings as errors and documents the public API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-j", "1", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr
    tasks = (out / "api" / "tasks.html").read_text(encoding="utf-8")
    assert 'id="leukemia_wbc.tasks.DualBranchClassifier"' in tasks
    assert 'id="leukemia_wbc.tasks.BaseTask.configure_models"' in tasks
    data = (out / "api" / "data.html").read_text(encoding="utf-8")
    assert 'id="leukemia_wbc.data.WBCDataModule"' in data
    for page in ("installation", "datasets", "pipeline", "segmentation", "classifiers",
                 "cross_validation", "attributions", "cli", "extending"):  # fmt: skip
        assert (out / f"{page}.html").is_file(), page
