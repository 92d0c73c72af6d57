"""``examples/paper_chain.py --fast``: the two-stage chain on the real segmentation_WBC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.realdata
@pytest.mark.slow  # 30-110 s on 2 cores: run with -m slow
def test_paper_chain_fast_mode(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "chain"
    cmd = [sys.executable, str(ROOT / "examples" / "paper_chain.py"), "--fast", "--threads", "1",
           "--root", str(shared_data / "segmentation_WBC"), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every stage ran through the command line, the U-Net's checkpoint fed the classifiers
    assert "$ leukemia-wbc fit --config segmentation_unet" in proc.stdout
    unet = out / "runs" / "segmentation_unet" / "unet.ckpt"
    assert unet.is_file()
    summary = json.loads((out / "paper_chain.json").read_text())
    assert set(summary["dice"]) == {"U-Net", "k-means"}
    assert 0.8 < summary["dice"]["k-means"] <= 1.0  # the classical segmenter on the other lab
    assert 0.0 < summary["dice"]["U-Net"] <= 1.0
    rows = summary["models"]
    assert len(rows) == 7 and "Majority class (same folds)" in rows
    for row in rows.values():
        mean = float(row["accuracy"].split(" ± ")[0])
        assert 0.0 <= mean <= 1.0
    # the SVM on expert masks is the one model that learns in one epoch: above the majority
    majority = float(rows["Majority class (same folds)"]["accuracy"].split(" ± ")[0])
    assert float(rows["SVM, expert masks"]["accuracy"].split(" ± ")[0]) > majority
    hparams = json.loads((out / "dual_branch_u-net_masks" / "config.json").read_text())
    assert hparams["model"]["hparams"]["segmenter"] == str(unet)
    assert hparams["model"]["hparams"]["mask_source"] == "segmenter"
    assert (out / "paper_chain.md").read_text() in proc.stdout
