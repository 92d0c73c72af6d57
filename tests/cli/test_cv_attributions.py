"""``leukemia-wbc cv --cv.attributions METHOD``: per-fold attributions and the report's section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leukemia_wbc.cli import main

TINY = [
    "cv", "--config", "demo", "--data.dataset.init_args.n", "48", "--data.size", "32",
    "--cv.max_epochs", "1", "--cv.accelerator", "cpu",
]  # fmt: skip


# slow: the folds' Integrated Gradients and the report's section are checked fast in
# tests/experiments/test_fold_attributions.py, and `cv --config demo` writes Grad-CAM
# galleries through the command in tests/cli/test_packaged_configs.py
@pytest.mark.slow
def test_cv_writes_each_folds_attributions_and_reports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cv"
    args = [*TINY, "--cv.output_dir", str(out), "--cv.attributions", "integrated_gradients",
            "--cv.attributions_per_class", "1", "--cv.attributions_max_cells", "4"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    for k in range(3):
        focus = out / f"fold_{k}" / "attributions" / "integrated_gradients" / "focus.json"
        body = json.loads(focus.read_text())
        assert body["fold"] == k and len(body["cells"]) == 4 and body["max_cells"] == 4
        assert body["nucleus"] == "dataset masks" and body["branches"] == ["cell", "nucleus"]
    page = (out / "report" / "report.html").read_text()
    assert "(Integrated Gradients)</h2>" in page and "<strong>Nucleus focus</strong>" in page
    assert '<img alt="attributions_0_integrated_gradients"' in page
    config = json.loads((out / "config.json").read_text())
    assert "attributions" not in json.dumps(config)  # not part of the configuration check


def test_cv_bad_attribution_method_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TINY, "--cv.output_dir", str(tmp_path / "cv"), "--cv.attributions", "saliency"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == (
        "leukemia-wbc: error: attributions: expected 'gradcam', 'integrated_gradients' or None "
        "(off), got 'saliency'\n"
    )
    assert not (tmp_path / "cv").exists()  # nothing trained
