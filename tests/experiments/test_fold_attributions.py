"""Attributions inside the cross-validation: per-fold galleries and focus tables, resume, report."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.experiments import (
    CrossValidator,
    CVResult,
    ExplainedCell,
    FoldAttributions,
    focus_table,
    gallery_items,
    read_fold_attributions,
    write_fold_attributions,
)
from leukemia_wbc.experiments import attributions as gallery_module
from leukemia_wbc.experiments.fold_attributions import report_cells
from leukemia_wbc.models.handcrafted import HandcraftedSVM
from leukemia_wbc.report import write_report
from leukemia_wbc.report.gallery import PANEL_PX, block_sizes
from leukemia_wbc.tasks import DualBranchClassifier

QUIET: dict[str, Any] = {"enable_progress_bar": False, "enable_model_summary": False}
#: Integrated Gradients: Grad-CAM of 32-px inputs has 1x1 feature maps (often all zero).
ATTR: dict[str, Any] = {"attributions": "integrated_gradients", "attributions_per_class": 1,
                        "attributions_max_cells": 8}  # fmt: skip
IG = "integrated_gradients"


@pytest.fixture(scope="module")
def dm() -> WBCDataModule:
    ds = SyntheticWBC(48, size=32, seed=8, n_patients=6, difficulty=0.1)
    return WBCDataModule(ds, size=32, batch_size=16, augment=False)


def dual() -> DualBranchClassifier:
    return DualBranchClassifier("resnet10t", "mobilenetv3_small_050", num_classes=4,
                                nucleus_size=32, fusion_features=16, head_hidden=(16,))  # fmt: skip


def validator(dm: WBCDataModule, out: Path, task: Any = None, **kwargs: Any) -> CrossValidator:
    args: dict[str, Any] = {"n_splits": 3, "max_epochs": 1, "accelerator": "cpu",
                            "trainer_kwargs": QUIET, **kwargs}  # fmt: skip
    return CrossValidator(task if task is not None else dual(), dm, out, **args)


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.*")}


@pytest.fixture(scope="module")
def run(dm: WBCDataModule, tmp_path_factory: pytest.TempPathFactory) -> tuple[CVResult, Path]:
    """Fold 0 trained without attributions, then the whole run with them (folds 1, 2 train)."""
    out = tmp_path_factory.mktemp("cv") / "dual"
    validator(dm, out).run(folds=[0])
    assert not (out / "fold_0" / "attributions").exists()
    before = mtimes(out / "fold_0")
    result = validator(dm, out, **ATTR).run()
    after = mtimes(out / "fold_0")
    assert {k: v for k, v in after.items() if not k.startswith("attributions")} == before
    return result, out


def test_each_fold_writes_its_gallery_and_focus_table(
    run: tuple[CVResult, Path], dm: WBCDataModule
) -> None:
    result, out = run
    preds = result.predictions
    for k in range(3):
        folder = out / f"fold_{k}" / "attributions" / IG
        body = json.loads((folder / "focus.json").read_text())
        assert (body["fold"], body["method"], body["nucleus"]) == (k, IG, "dataset masks")
        assert body["branches"] == ["cell", "nucleus"] and body["per_class"] == 1
        held_out = {int(i): r for r, i in enumerate(preds.index) if preds.fold[r] == k}
        assert len(body["cells"]) == min(8, len(held_out))
        labels = [c["label"] for c in body["cells"]]
        assert all(labels.count(c) >= 1 for c in dm.classes)  # spread over the classes
        for cell in body["gallery"] + body["cells"]:
            row = held_out[cell["index"]]  # held out by this fold, explained by its model
            assert cell["label"] == result.classes[int(preds.label[row])]
            assert cell["pred"] == result.classes[int(preds.pred[row])]
            assert cell["prob"] == pytest.approx(float(preds.probs[row].max()), abs=1e-4)
            assert 0 < cell["nucleus_area"] < 1
            assert all(0 < v < 1 for v in cell["nucleus_share"].values())
        kinds = [(c["label"], c["pred"] == c["label"]) for c in body["gallery"]]
        assert kinds and len(set(kinds)) == len(kinds)  # at most one per class and kind
        for cell in body["gallery"]:
            assert set(cell["files"]) == {"image", "cell", "nucleus", "map:cell", "map:nucleus",
                                          "mask"}  # fmt: skip
            for key, name in cell["files"].items():
                with Image.open(folder / name) as png:
                    values = np.asarray(png)
                    assert png.size == (32, 32)
                    assert (png.mode == "RGB") == (key in ("image", "cell", "nucleus"))
                if key.startswith("map:"):  # the raw map, 16-bit, scaled to its peak
                    assert values.dtype == np.uint16 and values.max() == 65535
                elif key == "mask":  # the nucleus the shares were measured in
                    assert set(np.unique(values).tolist()) == {0, 255}
                    assert (values > 0).mean() == pytest.approx(cell["nucleus_area"])
        pngs = {p.name for p in folder.glob("*.png")}
        assert pngs == {n for c in body["gallery"] for n in c["files"].values()}
        nucleus = body["focus"]["nucleus"]
        assert [r["class"] for r in nucleus] == list(dm.classes)
        assert sum(r["cells"] for r in nucleus) == len(body["cells"])
        assert not list((out / f"fold_{k}" / "attributions").glob(".*"))  # no temporary left
    found = result.attributions()
    assert [(a.fold, a.method) for a in found] == [(0, IG), (1, IG), (2, IG)]
    assert found[1].gallery[0].files and found[1].focus()[1].branch == "nucleus"
    assert [a.fold for a in CVResult.load(out).attributions()] == [0, 1, 2]


def test_resume_keeps_finished_attributions(
    run: tuple[CVResult, Path], dm: WBCDataModule, caplog: pytest.LogCaptureFixture
) -> None:
    _, out = run
    before = [mtimes(out / f"fold_{k}") for k in range(3)]
    with caplog.at_level(logging.WARNING):
        validator(dm, out, **{**ATTR, "attributions_max_cells": 4}).run()
    assert [mtimes(out / f"fold_{k}") for k in range(3)] == before  # nothing redone
    assert "attributions of per_class=1, max_cells=8 kept" in caplog.text


def test_a_killed_explanation_leaves_nothing_read_as_finished(
    run: tuple[CVResult, Path], dm: WBCDataModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, out = run
    root = out / "fold_1" / "attributions"
    saved = json.loads((root / IG / "focus.json").read_text())
    shutil.rmtree(root / IG)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gallery_module, "atomic_write_text", killed)  # dies writing focus.json
    with pytest.raises(KeyboardInterrupt):
        validator(dm, out, **ATTR).explain_fold(1)
    assert not list(root.iterdir())  # neither the folder nor a temporary one
    (root / f".{IG}.123.abc").mkdir()  # as a run killed with SIGKILL leaves it
    (root / f".{IG}.123.abc" / "focus.json").write_text(json.dumps(saved))
    assert [a.fold for a in read_fold_attributions(out)] == [0, 2]
    monkeypatch.undo()
    again = validator(dm, out, **ATTR).explain_fold(1)
    assert again is not None and again.folder == root / IG
    assert [p.name for p in root.iterdir()] == [IG]
    assert [c.index for c in again.cells] == [c["index"] for c in saved["cells"]]
    assert [a.fold for a in result.attributions()] == [0, 1, 2]


def test_segmenter_masks_and_gradcam(run: tuple[CVResult, Path], dm: WBCDataModule) -> None:
    """Without masks in the data, the model's segmenter gives the nucleus."""
    result, _ = run

    class NoMasks:
        def __getitem__(self, i: int) -> Any:
            sample = dm.dataset[i]
            assert sample is not None
            sample.pop("mask")
            return sample

    no_masks: Any = NoMasks()
    att = write_fold_attributions(result, no_masks, 2, method="gradcam", per_class=0,
                                  max_cells=4)  # fmt: skip
    assert att.gallery == [] and len(att.cells) == 4 and att.branches == ("cell", "nucleus")
    assert att.nucleus == "the model's segmenter (ClassicalNucleusSegmenter)"
    assert all(0 < c.nucleus_area < 1 for c in att.cells)
    with pytest.raises(FileExistsError, match="delete it"):
        write_fold_attributions(result, dm.dataset, 2, method="gradcam")
    assert {a.method for a in result.attributions()} == {"gradcam", IG}
    shutil.rmtree(att.folder)


def test_report_shows_the_focus_table_and_the_gallery(
    run: tuple[CVResult, Path], tmp_path: Path
) -> None:
    result, _ = run
    files = write_report([result], tmp_path / "report")
    page = files.html.read_text()
    heading = f"<h2>Attributions: {result.name} (Integrated Gradients)</h2>"
    assert heading in page
    section = page.split(heading)[1].split("<h2>")[0]
    assert "<strong>Nucleus focus</strong>" in section and "more than an even spread" in section
    assert "<th>nucleus branch: attribution in nucleus</th>" in section
    assert "<td>all classes</td>" in section and f"fold_&lt;k&gt;/attributions/{IG}/" in section
    assert section.count(f'<img alt="attributions_0_{IG}"') == 1
    cells = report_cells(result.attributions())
    items = gallery_items(cells)
    assert len(items) == len(cells) > 0 and all(i.mask is not None for i in items)
    data = section.split(f'<img alt="attributions_0_{IG}" src="data:image/png;base64,')[1]
    with Image.open(io.BytesIO(base64.b64decode(data.split('"')[0]))) as png:
        grid = np.asarray(png.convert("RGB"))
    blocks = block_sizes(len(cells))
    assert grid.shape[1] >= max(blocks) * PANEL_PX  # one readable column per cell
    assert grid.shape[1] < (max(blocks) + 2) * PANEL_PX
    rows = 4  # the image, the cell and the nucleus branch's maps, the nucleus outline
    # each row: a panel, a caption line and a gap (20 to 40 px)
    height = grid.shape[0]
    assert (
        len(blocks) * rows * (PANEL_PX + 20)
        <= height
        < len(blocks) * (rows + 0.5) * (PANEL_PX + 40)
    )
    r, g, b = (grid[..., k].astype(int) for k in range(3))
    assert ((r < 100) & (g > 215) & (b < 80)).sum() > 20 * len(cells)  # outlines drawn
    assert f"attributions_0_{IG}" in {p.stem for p in files.figures}
    body = json.loads(files.json.read_text())["attributions"][result.name][IG]
    assert sorted(body["folds"]) == ["0", "1", "2"] and set(body["focus"]) == {"cell", "nucleus"}
    check_html(page)
    assert "## Attributions: " in files.markdown.read_text()


class _Balance(html.parser.HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()


def check_html(page: str) -> None:
    """Every element closed in order (the report's HTML stays well formed)."""
    parser = _Balance()
    parser.feed(page)
    parser.close()
    assert parser.stack == []


def test_cells_saved_without_raw_maps_are_left_out_of_the_figure(
    run: tuple[CVResult, Path],
) -> None:
    """Folders of an earlier version kept only the overlays: nothing to redraw a map from."""
    att = run[0].attributions()[0]
    old = replace(att, gallery=[replace(c, files={k: v for k, v in c.files.items()
                                                  if not k.startswith("map:")})
                                for c in att.gallery])  # fmt: skip
    assert len(gallery_items([(att, c) for c in att.gallery])) == len(att.gallery)
    assert gallery_items([(old, c) for c in old.gallery]) == []


def test_every_packaged_network_cv_config_writes_attributions() -> None:
    """So that ``leukemia-wbc cv --config NAME`` reports a gallery; the SVM's configs do not."""
    import yaml

    from leukemia_wbc.configs import config_names, resolve_config

    def cv(*names: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for name in names:
            merged |= yaml.safe_load(Path(resolve_config(name)).read_text()).get("cv") or {}
        return merged

    with_cv = [
        n for n in config_names() if "cv" in yaml.safe_load(Path(resolve_config(n)).read_text())
    ]
    networks = [n for n in with_cv if n not in ("svm_baseline", "demo_svm", "colour_baseline")]
    assert {"demo", "paper_dual_branch", "resnet50_baseline", "vgg16_baseline"} <= set(networks)
    for name in networks:
        assert cv(name).get("attributions") in ("gradcam", "integrated_gradients"), name
    assert cv("svm_baseline").get("attributions") is None
    assert cv("colour_baseline")["attributions"] is None
    assert cv("demo", "demo_svm")["attributions"] is None  # the demo's SVM: no note in the log


def test_focus_table_without_masks_says_so() -> None:
    cell = ExplainedCell(0, "a.png", "ALL", "ALL", 0.9, math.nan, {"cell": math.nan})
    att = FoldAttributions(0, "gradcam", Path("x"), ("ALL", "normal"), ("cell",), None, [], [cell],
                           1, 8)  # fmt: skip
    assert att.focus() == [] and focus_table([att]) == ""
    from leukemia_wbc.experiments.fold_attributions import focus_report

    assert "No nucleus-focus table" in focus_report([att])


def test_the_svm_is_skipped_with_a_note(
    dm: WBCDataModule, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = validator(dm, tmp_path, task=HandcraftedSVM(progress=False), **ATTR).run()
    assert f"attributions={IG!r} skipped: a feature baseline has no gradients" in caplog.text
    assert not list(tmp_path.glob("fold_*/attributions")) and result.attributions() == []
    assert "<h2>Attributions" not in write_report([result], tmp_path / "r").html.read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attributions": "gradcams"},
         "attributions: expected 'gradcam', 'integrated_gradients' or None (off), got 'gradcams'"),
        ({"attributions": "gradcam", "attributions_per_class": -1},
         "attributions_per_class must be >= 0, got -1"),
        ({"attributions": "gradcam", "attributions_per_class": 0, "attributions_max_cells": 0},
         "attributions_per_class and attributions_max_cells are both 0: nothing to explain"),
    ],
)  # fmt: skip
def test_bad_attribution_arguments_fail_before_training(
    dm: WBCDataModule, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        validator(dm, tmp_path / "cv", **kwargs)
    assert str(err.value) == message
    assert not (tmp_path / "cv").exists()
