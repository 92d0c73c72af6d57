"""``examples/custom_backbone.py --fast``: two subclassed classifiers learn above chance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 30-110 s on 2 cores: run with -m slow
def test_custom_backbone_fast_mode(tmp_path: Path) -> None:
    out = tmp_path / "custom"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_backbone.py"), "--fast", "--threads",
         "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["chance"] == 0.25 and result["test_cells"] > 50
    models = result["models"]
    assert set(models) == {"TinyCNNClassifier", "CosineHeadClassifier(resnet10t)"}
    for name, figures in models.items():
        # measured: 0.588 (tiny CNN) and 0.485 (resnet10t + cosine head) on 97 held-out cells
        assert figures["accuracy"] > max(0.35, result["majority"]), (name, figures)
        assert figures["parameters"] > 0
    assert models["TinyCNNClassifier"]["checkpoint_reloads"] is True
    assert (out / "tiny_cnn.ckpt").is_file()
    assert "reloads as TinyCNNClassifier(width=16, blocks=4)" in proc.stdout
