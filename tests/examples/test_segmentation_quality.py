"""``examples/segmentation_quality.py`` in its fast mode, on the real segmentation_WBC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 30 s on 2 cores (its steps are tested in tests/models): -m slow
@pytest.mark.realdata
def test_segmentation_quality_fast_mode(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "segmentation_quality.py"), "--fast", "--quiet",
         "--threads", "1", "--root", str(shared_data / "segmentation_WBC"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Classical nucleus segmentation" in proc.stdout
    assert "U-Net cross-domain" in proc.stdout
    figures = json.loads((out / "segmentation_quality.json").read_text())
    classical = figures["classical"]
    assert set(classical) >= {"kmeans", "watershed", "otsu_hematoxylin"}
    # a fast run scores k-means on an image subset: 0.968 / 0.982 measured
    assert min(classical["kmeans"].values()) > 0.9
    assert len(figures["unet"]) == 4  # two directions, with and without stain normalisation
    for row in figures["unet"].values():
        assert 0.0 <= row["raw"] <= 1.0
