"""``examples/cross_validation.py --fast``: four models on identical folds, table and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 30-110 s on 2 cores: run with -m slow
def test_cross_validation_example_fast_mode(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    cmd = [sys.executable, str(ROOT / "examples" / "cross_validation.py"), "--fast",
           "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "comparison.md").read_text()
    assert table in proc.stdout
    for name in ("DualBranchClassifier(resnet18+mobilenetv2_050)", "CellClassifier(resnet18)",
                 "CellClassifier(vgg11)", "HandcraftedSVM"):  # fmt: skip
        assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) == 1 + 4
    report = out / "report"
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    assert {"roc_0", "confusion_0", "roc_3", "confusion_3", "gallery"} <= figures
    assert "Attribution gallery" in (report / "report.html").read_text()
    assert len(json.loads((report / "report.json").read_text())["models"]) == 4
    assert list((out / "gallery").glob("*_nucleus.png"))
    # Running again resumes: every fold is already finished, nothing is retrained.
    before = (out / "svm" / "fold_0" / "fold.json").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "svm" / "fold_0" / "fold.json").read_text() == before
    assert "Trainer.fit" not in again.stdout + again.stderr
