"""``examples/folder_cross_validation.py --fast``: a demo class folder, two models, the report."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "folder_cross_validation.py"
MODELS = ("CellClassifier(resnet10t)", "HandcraftedSVM")
CLASSES = ("ALL", "AML", "CLL", "normal")


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_folder_cv_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 22 s on 2 cores; its argument checks stay in the fast suite (below)
def test_folder_cross_validation_fast_mode(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the demo folder: images only, one folder per class, the patient in each file name
    demo = out / "demo_folder"
    assert sorted(p.name for p in demo.iterdir() if p.is_dir()) == list(CLASSES)
    images = sorted(demo.glob("*/*.png"))
    assert len(images) == 120
    assert all(p.stem.startswith("patient") for p in images)
    assert "120 images, classes ALL 30, AML 30, CLL 30, normal 30; 6 groups" in proc.stdout
    # identical, patient-grouped folds for both models
    folds = {}
    for key in ("cnn", "svm"):
        with (out / key / "folds.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 120
        folds[key] = [(r["path"], r["fold"]) for r in rows]
        per_group: dict[str, set[str]] = {}
        for r in rows:
            per_group.setdefault(r["group"], set()).add(r["fold"])
        assert len(per_group) == 6 and all(len(f) == 1 for f in per_group.values())
    assert folds["cnn"] == folds["svm"]
    # the comparison table, printed and written
    table = (out / "comparison.md").read_text()
    assert table in proc.stdout
    for name in MODELS:
        assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) == 1 + 4
    # the report
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["models"]) == list(MODELS)
    assert report["classes"] == list(CLASSES)
    assert all(len(m["folds"]) == 3 for m in report["models"].values())
    # the SVM on classically segmented nuclei learns something at 32 px (AUC 0.757 measured)
    assert report["models"]["HandcraftedSVM"]["summary"]["auroc"]["mean"] > 0.6
    html = (out / "report" / "report.html").read_text()
    assert all(name in html for name in MODELS)
    assert {"roc_0", "roc_1", "confusion_0", "confusion_1"} <= {
        p.stem for p in (out / "report" / "figures").glob("*.png")
    }


def test_folder_cross_validation_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _example()
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(["--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--root DIR, or --make-demo-folder DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.parse_args(["--root", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "is not a folder" in capsys.readouterr().err
    # the demo writer never writes into a folder holding other files
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        example.write_demo_folder(busy, n=8, size=16, patients=2, seed=0)
    # and reuses its own folder written with the same settings
    demo = example.write_demo_folder(tmp_path / "demo", n=8, size=16, patients=2, seed=0)
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*.png")}
    assert len(before) == 8
    example.write_demo_folder(demo, n=8, size=16, patients=2, seed=0)
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*.png")} == before
