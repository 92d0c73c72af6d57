"""Decoding and bad input: every case either works (mode conversion) or names the file."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from leukemia_wbc.data.base import ImageReadError, Record, WBCDataset, decode_mask, read_rgb
from leukemia_wbc.data.datamodule import collate_samples


def _rgb(tmp_path, name="cell.png", size=(20, 30)):
    arr = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    return path, arr


def _ds(paths, labels=None, masks=None, **kw):
    labels = labels or [0] * len(paths)
    masks = masks or [None] * len(paths)
    recs = [
        Record(str(p), lab, f"g{i}", None if m is None else str(m))
        for i, (p, lab, m) in enumerate(zip(paths, labels, masks, strict=True))
    ]
    return WBCDataset(recs, ("a", "b"), **kw)


def test_png_round_trip_and_resize(tmp_path):
    path, arr = _rgb(tmp_path)
    assert np.array_equal(read_rgb(path), arr)
    s = _ds([path], size=16)[0]
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.uint8
    assert _ds([path], size=None)[0]["image"].shape == (3, 20, 30)


def test_grayscale_palette_rgba_converted(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(gray)
    assert read_rgb(gray)[0, 0].tolist() == [77, 77, 77]
    pal = tmp_path / "p.png"
    img = Image.fromarray(np.ones((8, 8), np.uint8), "P")
    img.putpalette([0, 0, 0, 200, 10, 30] + [0] * (256 * 3 - 6))
    img.save(pal)
    assert read_rgb(pal)[0, 0].tolist() == [200, 10, 30]
    rgba = tmp_path / "a.png"
    pix = np.zeros((8, 8, 4), np.uint8)
    pix[..., :3] = (10, 20, 30)
    pix[:4, :, 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(pix, "RGBA").save(rgba)
    out = read_rgb(rgba)
    assert out[0, 0].tolist() == [10, 20, 30] and out[7, 0].tolist() == [255, 255, 255]


def test_16bit_tiff_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.tif"
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(path)
    out = read_rgb(path)[:, :, 0]
    assert out.min() == 0 and out.max() == 255
    assert np.array_equal(out.ravel(), np.round(ramp.ravel() / 257.0).astype(np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"this is not an image", "cannot be read as an image")],
)
def test_empty_or_not_an_image(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as err:
        _ds([path])[0]
    assert str(path) in str(err.value)


def test_truncated_file(tmp_path):
    path, _ = _rgb(tmp_path, "t.jpg", (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.jpg"):
        _ds([path])[0]


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        _ds([tmp_path / "gone.bmp"])[0]


def test_mask_three_levels_and_size_mismatch(tmp_path):
    path, _ = _rgb(tmp_path, size=(10, 10))
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 128
    mask[4:6, 4:6] = 255
    mpath = tmp_path / "m.png"
    Image.fromarray(mask).save(mpath)
    s = _ds([path], masks=[mpath], size=None)[0]
    assert int(s["mask"].sum()) == 4 and int(s["cell_mask"].sum()) == 36
    small = tmp_path / "small.png"
    Image.fromarray(mask[:5, :5]).save(small)
    with pytest.raises(ImageReadError, match="5x5 pixels but its image"):
        _ds([path], masks=[small])[0]


def test_missing_mask(tmp_path):
    path, _ = _rgb(tmp_path)
    with pytest.raises(ImageReadError, match=r"nomask\.png: no such file"):
        _ds([path], masks=[tmp_path / "nomask.png"])[0]


def test_allidb_colour_mask(tmp_path):
    rgb = np.full((6, 6, 3), 255, np.uint8)
    rgb[1:5, 1:5] = (0, 0, 255)
    rgb[2:4, 2:4] = (0, 255, 255)
    path = tmp_path / "c.png"
    Image.fromarray(rgb).save(path)
    nucleus, cell = decode_mask(path)
    assert nucleus.sum() == 4 and cell is not None and cell.sum() == 16
    rgb[:, :] = (255, 0, 0)
    Image.fromarray(rgb).save(path)
    with pytest.raises(ImageReadError, match="neither nucleus cyan"):
        decode_mask(path)


def test_empty_dataset_and_bad_label():
    with pytest.raises(ValueError, match="empty"):
        WBCDataset([], ("a",))
    with pytest.raises(ValueError, match=r"x\.png has label 5"):
        WBCDataset([Record("x.png", 5, "g")], ("a", "b"))


def test_skip_mode_logs_counts_and_collate_drops(tmp_path, caplog):
    good, _ = _rgb(tmp_path, size=(8, 8))
    bad = tmp_path / "broken.bmp"
    bad.write_bytes(b"BM nonsense")
    ds = _ds([good, bad, good], labels=[0, 1, 1], size=8, on_error="skip")
    with caplog.at_level(logging.WARNING):
        samples = [ds[i] for i in range(3)]
    assert samples[1] is None and ds.skipped == [str(bad)]
    assert "broken.bmp" in caplog.text
    batch = collate_samples(samples)
    # the skipped sample is gone and its label did not shift onto another image
    assert batch["label"].tolist() == [0, 1] and batch["path"] == [str(good), str(good)]
    assert int(batch["skipped"]) == 1


def test_labels_without_decoding(tmp_path, monkeypatch):
    path, _ = _rgb(tmp_path)
    ds = _ds([path, path], labels=[0, 1])

    def boom(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr("leukemia_wbc.data.base.read_rgb", boom)
    assert ds.labels.tolist() == [0, 1] and ds.groups == ["g0", "g1"]
    assert ds.class_counts() == {"a": 1, "b": 1}


def test_with_size_is_a_view_that_leaves_the_dataset_alone(tmp_path):
    path, _ = _rgb(tmp_path)
    ds = _ds([path, path], labels=[0, 1], size=16)
    view = ds.with_size((8, 12))
    assert type(view) is WBCDataset and view is not ds
    assert ds.size == (16, 16) and view.size == (8, 12)
    assert view.records is ds.records and view.classes == ds.classes
    assert view[0]["image"].shape == (3, 8, 12) and ds[0]["image"].shape == (3, 16, 16)
    assert ds.with_size(None)[1]["image"].shape == (3, 20, 30)
    with pytest.raises(ValueError, match="size must be positive"):
        ds.with_size(0)
