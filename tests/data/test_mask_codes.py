"""Nucleus mask codes: only the documented codes are read, and an empty mask is a mask.

A grey mask is read in the code 0 (background) / 128 (cytoplasm) / 255 (nucleus), or as a binary
0/255 or 0/1 nucleus mask; values within ``MASK_TOLERANCE`` of a code are that code, up to
``MAX_OFF_CODE_SHARE`` of the pixels may lie farther off, and anything else (noise, a soft
probability map) is a ``MaskCodeError`` (a ``ValueError``) naming the file. An all-zero mask has
an empty nucleus and an empty cell mask, so a batch of a three-level dataset keeps its
``cell_mask`` and the DataModule counts the empty mask.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leukemia_wbc.data import MaskCodeError, SegmentationWBC2018, WBCDataModule, decode_mask
from leukemia_wbc.data.base import ImageReadError, Record, WBCDataset
from leukemia_wbc.data.images import MASK_TOLERANCE, MAX_OFF_CODE_SHARE
from leukemia_wbc.data.loading import empty_mask_paths
from tests.conftest import make_fixture


def _three_level(side: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - side / 2, xx - side / 2)
    mask = np.zeros((side, side), np.uint8)
    mask[r < side * 0.4] = 128
    mask[r < side * 0.2] = 255
    return mask


def _save(path: Path, arr: np.ndarray) -> Path:
    """Save ``arr`` in the mode Pillow infers from its dtype (uint16: ``I;16``, float32: ``F``)."""
    Image.fromarray(arr).save(path)
    return path


# -- codes -------------------------------------------------------------------------------------
def test_random_noise_is_refused_naming_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    path = _save(tmp_path / "noise.png", noise)
    with pytest.raises(ValueError, match=r"noise\.png: \d+\.\d% of the mask's pixels lie more"):
        decode_mask(path)
    with pytest.raises(MaskCodeError, match="expected 0 \\(background\\), 128 \\(cytoplasm\\)"):
        decode_mask(path)


def test_soft_probability_maps_are_refused(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:40, :40]
    prob = np.exp(-((yy - 20.0) ** 2 + (xx - 20.0) ** 2) / 120.0)  # a blurred nucleus
    grey = _save(tmp_path / "soft.png", (prob * 255).round().astype(np.uint8))
    with pytest.raises(MaskCodeError, match=r"soft\.png"):
        decode_mask(grey)
    unit = _save(tmp_path / "soft.tif", prob.astype(np.float32))  # floats in [0, 1]
    with pytest.raises(MaskCodeError, match=r"soft\.tif"):
        decode_mask(unit)


def test_jpeg_like_noise_within_the_tolerance_is_read_as_the_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean = _three_level()
    rng = np.random.default_rng(1)
    noisy = clean.astype(int) + rng.integers(-MASK_TOLERANCE, MASK_TOLERANCE + 1, clean.shape)
    far = rng.random(clean.shape) < MAX_OFF_CODE_SHARE / 2  # a few pixels farther off
    noisy[far & (clean == 0)] = 40
    path = _save(tmp_path / "noisy.png", np.clip(noisy, 0, 255).astype(np.uint8))
    with caplog.at_level(logging.DEBUG, logger="leukemia_wbc.data.images"):
        nucleus, cell = decode_mask(path)
    assert np.array_equal(nucleus, (clean == 255).astype(np.uint8))
    assert cell is not None and np.array_equal(cell, (clean > 0).astype(np.uint8))
    report = [r.getMessage() for r in caplog.records if "noisy.png" in r.getMessage()]
    assert report and "more than 10 grey levels off" in report[0]


def test_cytoplasm_without_nucleus_is_not_read_as_a_nucleus(tmp_path: Path) -> None:
    """0/128 only: a cell without a visible nucleus, not a binary nucleus mask."""
    mask = _three_level()
    mask[mask == 255] = 128
    nucleus, cell = decode_mask(_save(tmp_path / "cyto.png", mask))
    assert nucleus.sum() == 0 and cell is not None and cell.sum() == (mask == 128).sum()


def test_binary_masks_still_read(tmp_path: Path) -> None:
    disc = (_three_level() == 255).astype(np.uint8)
    for name, arr in (
        ("b255.png", disc * 255),
        ("b01.png", disc),
        ("b01_16bit.png", disc.astype(np.uint16)),  # I;16: was scaled down to all zero
    ):
        nucleus, cell = decode_mask(_save(tmp_path / name, arr))
        assert np.array_equal(nucleus, disc), name
        assert cell is None, name


def test_empty_masks_are_empty_in_every_encoding(tmp_path: Path) -> None:
    zeros = np.zeros((12, 12), np.uint8)
    white = np.full((12, 12, 3), 255, np.uint8)  # ALL-IDB colour code: background only
    for name, arr in (("zero.png", zeros), ("zero_rgb.png", np.stack([zeros] * 3, 2)),
                      ("white_rgb.png", white)):  # fmt: skip
        nucleus, cell = decode_mask(_save(tmp_path / name, arr))
        assert nucleus.sum() == 0 and cell is not None and cell.sum() == 0, name


def test_an_off_code_mask_is_skipped_like_an_unreadable_file(tmp_path: Path) -> None:
    image = _save(tmp_path / "cell.png", np.zeros((40, 40, 3), np.uint8))
    noise = np.random.default_rng(2).integers(0, 256, (40, 40), dtype=np.uint8)
    mask = _save(tmp_path / "m.png", noise)
    ds = WBCDataset([Record(str(image), 0, "g", str(mask))], ("a",), on_error="skip")
    assert ds[0] is None and ds.skipped == [str(image)]
    with pytest.raises(ImageReadError, match=r"m\.png"):
        WBCDataset([Record(str(image), 0, "g", str(mask))], ("a",))[0]


def test_jpeg_saved_mask_is_accepted(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_three_level(64)).save(buf, "JPEG", quality=95)
    path = tmp_path / "m.jpg"
    path.write_bytes(buf.getvalue())
    nucleus, cell = decode_mask(path)
    truth = _three_level(64)
    assert cell is not None
    assert (nucleus != (truth == 255)).mean() < 0.02 and (cell != (truth > 0)).mean() < 0.02


# -- an all-zero mask in a batch ---------------------------------------------------------------
def test_an_all_zero_mask_keeps_the_batch_whole_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_fixture("segmentation_wbc", tmp_path)
    empty = root / "Dataset 1" / "002.png"
    _save(empty, np.zeros((12, 12), np.uint8))
    ds = SegmentationWBC2018(root, size=16)
    dm = WBCDataModule(ds, size=16, batch_size=len(ds), split="holdout", val_fraction=0.2,
                       test_fraction=0.0, num_workers=0, augment=False)  # fmt: skip
    dm.setup("fit")
    batches = [*dm.train_dataloader(), *dm.val_dataloader()]
    assert sum(len(b["path"]) for b in batches) == len(ds)
    for batch in batches:  # every batch keeps its cell masks (three-class targets)
        assert batch["cell_mask"].shape == batch["mask"].shape
    with caplog.at_level(logging.WARNING, logger="leukemia_wbc.data.datamodule"):
        for batch in batches:
            out = dm.on_after_batch_transfer(batch, 0)
            assert out["image"].dtype == torch.float32
    assert dm.empty_mask_paths == {str(empty.with_suffix(".bmp"))}
    warned = [r.getMessage() for r in caplog.records if "empty nucleus mask" in r.getMessage()]
    assert len(warned) == 1 and "002.bmp" in warned[0]
    dm.on_after_batch_transfer(batches[0], 0)  # seen again (next epoch): not warned again
    assert len([r for r in caplog.records if "empty nucleus mask" in r.getMessage()]) == 1


def test_empty_mask_paths_of_a_batch() -> None:
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    mask[1, 0, 2, 2] = 1
    assert empty_mask_paths({"mask": mask, "path": ["a", "b", "c"]}) == ["a", "c"]
    assert empty_mask_paths({"path": ["a"]}) == []


# -- the real masks ----------------------------------------------------------------------------
@pytest.mark.realdata
def test_every_real_mask_is_accepted_without_a_warning(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both labs of segmentation_WBC: the worst file has 0.063 % of its pixels off-code."""
    masks = sorted((shared_data / "segmentation_WBC").glob("Dataset */*.png"))
    assert len(masks) == 400
    with caplog.at_level(logging.WARNING, logger="leukemia_wbc.data.images"):
        for path in masks:
            nucleus, cell = decode_mask(path)
            assert cell is not None and 0 < nucleus.sum() <= cell.sum(), path
    assert not caplog.records
