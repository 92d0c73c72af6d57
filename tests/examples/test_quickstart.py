from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 14 s on 2 cores; tests/test_readme.py runs the README's Python example fast
def test_quickstart_fast_mode(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--fast", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    confusion = result["confusion"]
    # 4x4 confusion matrix over the held-out patients (fold 0 of 5 out of 160 images)
    assert len(confusion) == 4 and all(len(row) == 4 for row in confusion)
    assert 20 <= sum(map(sum, confusion)) <= 60
    assert 0.0 <= result["cnn_accuracy"] <= 1.0 and 0.0 <= result["colour_accuracy"] <= 1.0
    with Image.open(out / "samples.png") as sheet:
        assert sheet.width > 400 and sheet.height > 300
    assert "accuracy on held-out patients" in proc.stdout
