"""Physical scale: a cell is the same number of pixels whatever the lab's magnification."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from leukemia_wbc.data import ImageFolderWBC, Record, WBCDataModule, WBCDataset
from leukemia_wbc.data.allidb import ALLIDB1
from leukemia_wbc.data.scale import rescale_mask, rescale_rgb
from leukemia_wbc.data.segmentation_wbc import SegmentationWBC2018
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.models import ClassicalNucleusSegmenter
from leukemia_wbc.tasks import CellClassifier
from leukemia_wbc.tasks.mask_cache import MaskCache
from tests.conftest import make_fixture

BACKGROUND = (230, 200, 150)
#: Diameter of the drawn cell, in micrometres.
CELL_UM = 10.0


def _cell_file(folder: Path, name: str, pixels_per_um: float, side_um: float = 20.0) -> Path:
    """A disc of CELL_UM micrometres at the centre of a field of side_um, with its mask."""
    side = round(side_um * pixels_per_um)
    yy, xx = np.mgrid[:side, :side] + 0.5
    inside = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (CELL_UM * pixels_per_um / 2) ** 2
    image = np.empty((side, side, 3), np.uint8)
    image[:] = BACKGROUND
    image[inside] = (90, 40, 140)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(image).save(path)
    Image.fromarray((inside * 255).astype(np.uint8)).save(folder / f"{name}_mask.png")
    return path


def _dataset(tmp_path: Path, scales: dict[str, float]) -> WBCDataset:
    records = []
    for name, scale in scales.items():
        path = _cell_file(tmp_path, name, scale)
        records.append(Record(str(path), 0, name, str(path.with_name(f"{name}_mask.png")), scale))
    return WBCDataset(records, ("cell",), size=48)


def _diameter(mask: torch.Tensor) -> float:
    return float(2 * np.sqrt(float(mask.sum()) / np.pi))


def test_rescale_cuts_or_pads_at_the_centre_with_the_border_colour() -> None:
    image = np.full((10, 10, 3), 200, np.uint8)
    image[3:7, 3:7] = 10  # a 4x4 dark square at the centre
    out = rescale_rgb(image, 2.0, (24, 24))
    assert out.shape == (24, 24, 3)
    dark = np.argwhere(out[..., 0] < 100)
    assert dark.min(0).tolist() == [8, 8] and dark.max(0).tolist() == [15, 15]  # 8x8, centred
    assert (out[:2] == 200).all()  # padded with the border's colour, not black
    mask = rescale_mask((image[..., 0] < 100).astype(np.uint8), 2.0, (24, 24))
    assert np.array_equal(mask.astype(bool), out[..., 0] < 100)  # the mask moves with the image
    small = rescale_rgb(image, 2.0, (8, 8))  # cut: the centre is kept
    assert (small[..., 0] < 100).all()


def test_two_magnifications_give_the_same_cell_size(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, {"low": 2.0, "high": 5.0})
    plain = [_diameter(ds[i]["mask"]) for i in range(2)]
    assert abs(plain[0] - plain[1]) < 1.5  # both fields are 20 um: resizing alone agrees here
    view = ds.with_scale(3.0)
    assert ds.target_pixels_per_um is None  # the dataset given is unchanged
    sizes = [_diameter(view[i]["mask"]) for i in range(2)]
    assert sizes == pytest.approx([CELL_UM * 3.0] * 2, abs=1.5)
    for i in range(2):
        sample = view[i]
        assert sample["image"].shape == (3, 48, 48) and sample["mask"].shape == (1, 48, 48)
        dark = sample["image"][0] < 160
        assert (dark == sample["mask"][0].bool()).float().mean() > 0.98  # aligned


def test_a_field_of_another_size_keeps_its_cell_size(tmp_path: Path) -> None:
    """Fields of 20 and 40 um: resized as they are, the cell halves; resampled, it does not."""
    a = _cell_file(tmp_path / "a", "a", 3.0, side_um=20.0)
    b = _cell_file(tmp_path / "b", "b", 3.0, side_um=40.0)
    records = [Record(str(p), 0, p.stem, str(p.with_name(f"{p.stem}_mask.png"))) for p in (a, b)]
    ds = WBCDataset(records, ("cell",), size=48, pixels_per_um=3.0)
    plain = [_diameter(ds[i]["mask"]) for i in range(2)]
    assert plain[0] > 1.8 * plain[1]
    view = ds.with_scale(3.0)
    assert [_diameter(view[i]["mask"]) for i in range(2)] == pytest.approx([30.0, 30.0], abs=1.5)


def test_unknown_or_bad_pixel_sizes_are_one_line_errors(tmp_path: Path) -> None:
    path = _cell_file(tmp_path, "x", 2.0)
    ds = WBCDataset([Record(str(path), 0, "x")], ("cell",), size=32)
    with pytest.raises(ValueError, match=r"x\.png has no known pixel size.*pixels_per_um="):
        ds.with_scale(3.0)
    with pytest.raises(ValueError, match=r"x\.png has no known pixel size"):
        WBCDataModule(ds, size=32, target_pixels_per_um=3.0)
    for bad in (0, -1.0, float("nan"), True, "3"):
        with pytest.raises(ValueError, match="pixels per micrometre"):
            WBCDataset([Record(str(path), 0, "x")], ("cell",), pixels_per_um=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="target_pixels_per_um"):
            ds.with_scale(bad)  # type: ignore[arg-type]


def test_folder_datasets_take_a_pixel_size(tmp_path: Path) -> None:
    root = make_fixture("folder", tmp_path)
    ds = ImageFolderWBC(root / "classes", size=32, pixels_per_um=4.0)
    assert {ds.pixel_size(i) for i in range(len(ds))} == {4.0}
    assert ds.with_scale(2.0)[0]["image"].shape == (3, 32, 32)


def test_segmentation_wbc_carries_each_collections_pixel_size(tmp_path: Path) -> None:
    root = make_fixture("segmentation_wbc", tmp_path)
    ds = SegmentationWBC2018(root, size=32)
    by_source = {s: ds.pixel_size(i) for i, s in enumerate(ds.sources)}
    assert by_source == {"Dataset 1": 5.67, "Dataset 2": 11.86}
    ds = SegmentationWBC2018(root, size=32, pixels_per_um={"Dataset 2": 12.5})
    assert {s: ds.pixel_size(i) for i, s in enumerate(ds.sources)}["Dataset 2"] == 12.5
    assert SegmentationWBC2018(root, size=32, pixels_per_um=7.0).pixel_size(0) == 7.0
    with pytest.raises(ValueError, match="'Dataset 3'"):
        SegmentationWBC2018(root, pixels_per_um={"Dataset 3": 5.0})
    with pytest.raises(ValueError, match="SegmentationWBC2018 Dataset 1"):
        SegmentationWBC2018(root, pixels_per_um={"Dataset 1": -5.0})


def test_whole_smear_fields_are_not_resampled(tmp_path: Path) -> None:
    root = make_fixture("allidb", tmp_path)
    ds = ALLIDB1(root / "ALL_IDB1", pixels_per_um=5.0)
    with pytest.raises(ValueError, match="ALL-IDB1 holds whole smear fields"):
        ds.with_scale(3.0)


def test_the_scale_travels_with_the_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _dataset(tmp_path / "cells", {f"c{i}": 2.0 + 0.5 * i for i in range(8)})
    ds = WBCDataset(
        [
            Record(r.path, i % 2, r.group, r.mask_path, r.pixels_per_um)
            for i, r in enumerate(ds.records)
        ],
        ("a", "b"),
    )
    dm = WBCDataModule(ds, size=32, target_pixels_per_um=2.5, batch_size=4, split="holdout")
    assert dm.hparams["target_pixels_per_um"] == 2.5
    task = CellClassifier("resnet10t", classes=("a", "b"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    model = TrainedModel.from_checkpoint(path, device="cpu")
    assert model.pixels_per_um == 2.5 and model.describe()["pixels_per_um"] == 2.5
    # A file at 5 px/um, given with its pixel size, is read as training read its cells.
    big = _cell_file(tmp_path / "new", "big", 5.0)
    _, batch = next(model.batches([str(big)], pixels_per_um=5.0))
    reference = WBCDataset([Record(str(big), 0, "big", None, 5.0)], ("a", "b"), size=32)
    assert torch.equal(batch["image"][0], reference.with_scale(2.5)[0]["image"])
    with caplog.at_level(logging.WARNING):
        model.predict([str(big)])
    assert "files' pixel size was not given" in caplog.text


def test_the_mask_cache_keeps_each_scale_apart(tmp_path: Path) -> None:
    cache = MaskCache()
    plain = cache.attach(tmp_path, ClassicalNucleusSegmenter())
    scaled = cache.attach(tmp_path, ClassicalNucleusSegmenter(), pixels_per_um=3.0)
    again = cache.attach(tmp_path, ClassicalNucleusSegmenter(), pixels_per_um=3.0)
    assert plain is not None and scaled is not None
    assert plain != scaled == again


@pytest.mark.realdata
def test_real_cells_of_two_labs_come_to_one_size(shared_data: Path) -> None:
    """The neutrophils of Dataset 1 (120 px crops) and Dataset 2 (300 px crops) at 64 px.

    The median whole-cell diameter (expert masks): 40.9 against 34.1 px resized as they are,
    40.1 against 40.6 px resampled to 3 px/um.
    """
    ds = SegmentationWBC2018(shared_data / "segmentation_WBC", size=64)
    pairs = list(enumerate(zip(ds.sources, ds.labels, strict=True)))
    neutrophils = {
        s: [i for i, (src, y) in pairs if src == s and y == 0] for s in ("Dataset 1", "Dataset 2")
    }

    def median_diameter(view: WBCDataset, source: str) -> float:
        return float(np.median([_diameter(view[i]["cell_mask"]) for i in neutrophils[source]]))

    plain = [median_diameter(ds, s) for s in neutrophils]
    view = ds.with_scale(3.0)
    scaled = [median_diameter(view, s) for s in neutrophils]
    assert plain[0] / plain[1] > 1.15  # resized as they are, Dataset 2's cells are smaller
    assert scaled[0] / scaled[1] == pytest.approx(1.0, abs=0.04)
    assert scaled[1] == pytest.approx(13.5 * 3.0, rel=0.05)
