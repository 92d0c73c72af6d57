"""``examples/smear_detection.py --fast``: trains, compares the three detectors, writes weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "examples" / "smear_detection.py")


@pytest.mark.slow  # 30-110 s on 2 cores: run with -m slow
def test_smear_detection_fast_mode(tmp_path: Path) -> None:
    out = tmp_path / "det"
    args = [sys.executable, SCRIPT, "--fast", "--quiet", "--workers", "0", "--threads", "1"]
    proc = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "detectors.json").read_text())
    names = [s["name"] for s in record["scores"]]
    assert names == ["classical", "mask_rcnn", "hybrid", "hybrid_classical_edges"]
    by_name = {s["name"]: s for s in record["scores"]}
    # the classical detector needs no training: it finds cells even in the smoke run
    assert by_name["classical"]["all"]["map_50"] > 0.4
    for score in record["scores"]:
        assert 0.0 <= score["all"]["map"] <= 1.0 and score["n_images"] == 3
    assert "| classical |" in proc.stdout and "touching or overlapping" in proc.stdout
    # the saved network evaluates again through --weights, at another magnification
    weights = out / "mask_rcnn.pt"
    assert set(torch.load(weights, weights_only=True)) >= {
        "roi_heads.mask_predictor.mask_fcn_logits.weight"
    }
    again = subprocess.run([*args, "--weights", str(weights), "--test-pixels-per-um", "3",
                            "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at 3 pixels/um" in again.stdout and f"weights {weights}" in again.stdout
    refused = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)  # fmt: skip
    assert refused.returncode != 0 and "exists" in refused.stderr
