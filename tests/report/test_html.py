"""The attribution gallery and the report written from cross-validation results."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.evaluation import attribution_gallery
from leukemia_wbc.experiments import CrossValidator, CVResult, save_overlays, select_cells
from leukemia_wbc.models.handcrafted import HandcraftedSVM
from leukemia_wbc.report import write_report
from leukemia_wbc.report.gallery import PANEL_PX, block_sizes
from leukemia_wbc.tasks import DualBranchClassifier

QUIET: dict[str, Any] = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[WBCDataModule, list[CVResult], Path]:
    root = tmp_path_factory.mktemp("report")
    ds = SyntheticWBC(60, size=32, seed=8, n_patients=6, difficulty=0.1)
    dm = WBCDataModule(ds, size=32, batch_size=16, augment=False, stain_normalization=True)
    dual = DualBranchClassifier("resnet18", "mobilenetv2_050", num_classes=4, nucleus_size=32,
                                fusion_features=32, head_hidden=(16,))  # fmt: skip
    args: dict[str, Any] = {"n_splits": 3, "max_epochs": 2, "accelerator": "cpu", "devices": 1,
                            "trainer_kwargs": QUIET}  # fmt: skip
    results = [
        CrossValidator(dual, dm, root / "dual", **args).run(),
        CrossValidator(HandcraftedSVM(progress=False), dm, root / "svm", **args).run(),
    ]
    return dm, results, root


def test_gallery_reproduces_the_saved_predictions(
    setup: tuple[WBCDataModule, list[CVResult], Path],
) -> None:
    """Each fold's checkpoint and stain fit are rebuilt: same probabilities as in the CV run."""
    dm, (dual, _), root = setup
    rows = select_cells(dual, per_class=1)
    preds = dual.predictions
    for r in rows:  # per class: a correct one first (when any), then a wrong one
        assert preds.label[r] in range(4)
    items = attribution_gallery(dual, dm, per_class=1)
    assert [i.index for i in items] == [int(preds.index[r]) for r in rows]
    for item, r in zip(items, rows, strict=True):
        assert item.prob == pytest.approx(float(preds.probs[r].max()), abs=1e-4)
        assert item.correct == (int(preds.pred[r]) == int(preds.label[r]))
        assert set(item.maps) == {"cell", "nucleus"}
        assert item.maps["cell"].shape == (32, 32) and np.isfinite(item.maps["cell"]).all()
        assert 0 < item.nucleus_area < 1
    files = save_overlays(items, root / "overlays")
    assert len(files) == 3 * len(items) and all(f.stat().st_size > 100 for f in files)


def test_report_files(setup: tuple[WBCDataModule, list[CVResult], Path]) -> None:
    dm, results, root = setup
    before = (root / "dual" / "result.json").read_text()
    items = attribution_gallery(results[0], dm, per_class=1)
    out = write_report(results, root / "report", gallery=items, notes="A test run.")
    page = out.html.read_text()
    # Self-contained: every figure embedded, none linked.
    assert page.count("data:image/png;base64,") == len(out.figures)
    names = {p.stem for p in out.figures}
    assert {"class_balance", "folds", "roc_0", "confusion_0", "curves_0", "roc_1",
            "confusion_1", "gallery"} == names  # fmt: skip
    for heading in ("Dataset and split", "Comparison", "Attribution gallery", "Timings",
                    "Environment", "DualBranchClassifier(resnet18+mobilenetv2_050)"):  # fmt: skip
        assert f"<h2>{heading}" in page
    assert "<td>HandcraftedSVM</td>" in page and "A test run." in page
    # the folds wrote no attributions: the network's section says how to add them, the SVM none
    assert page.count("<h2>Attributions: ") == 1
    assert f"<h2>Attributions: {results[0].name}</h2>" in page
    assert "<code>--cv.attributions gradcam</code>" in page and "without retraining" in page
    md = out.markdown.read_text()
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out.markdown.parent / link).is_file()
    body = json.loads(out.json.read_text())
    assert set(body["models"]) == {r.name for r in results}
    acc = body["models"]["HandcraftedSVM"]["summary"]["accuracy"]["mean"]
    assert acc == pytest.approx(results[1].summary()["accuracy"].mean)
    assert body["environment"]["torch"] and len(body["gallery"]) == len(items)
    # the gallery grid: a column per cell; the image, two maps and the nucleus outline as rows
    assert all(i.mask is not None and i.nucleus == "dataset masks" for i in items)
    with Image.open(out.markdown.parent / "figures" / "gallery.png") as png:
        width, height = png.size
    blocks = block_sizes(len(items))
    assert max(blocks) * PANEL_PX <= width < (max(blocks) + 2) * PANEL_PX
    # each row: a panel, a caption line and a gap (20 to 40 px); 4 rows, not 3 or 5
    assert len(blocks) * 4 * (PANEL_PX + 20) <= height < len(blocks) * 4.5 * (PANEL_PX + 40)
    assert (root / "dual" / "result.json").read_text() == before  # results untouched


def test_report_needs_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one CVResult"):
        write_report([], tmp_path)
