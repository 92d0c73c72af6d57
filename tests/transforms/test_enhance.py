"""Histogram equalisation, CLAHE, grayscale and background removal (leukemia_wbc.transforms)."""

from __future__ import annotations

from pathlib import Path

import kornia.color as KC
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leukemia_wbc.data.segmentation_wbc import SegmentationWBC2018
from leukemia_wbc.data.synthetic import SyntheticWBC
from leukemia_wbc.transforms.enhance import (
    CLAHE,
    BackgroundRemoval,
    Grayscale,
    HistogramEqualization,
)


def _low_contrast(b: int = 1, size: int = 64, seed: int = 0) -> Tensor:
    """Smooth coloured images, luminance in [0.4, 0.6], moderate chroma, as uint8."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 3, size // 8, size // 8, generator=g)
    smooth = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    y = 0.4 + 0.2 * smooth[:, :1]
    chroma = 0.5 + 0.08 * (smooth[:, 1:] - 0.5)
    rgb = KC.ycbcr_to_rgb(torch.cat([y, chroma], 1)).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8)


def _chroma(rgb: Tensor) -> Tensor:
    return KC.rgb_to_ycbcr(rgb)[:, 1:]


def _local_std(y: Tensor, k: int = 8) -> float:
    mean = F.avg_pool2d(y, k)
    sq = F.avg_pool2d(y * y, k)
    return float((sq - mean**2).clamp_min(0).sqrt().mean())


def _synthetic(n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    ds = SyntheticWBC(n, size=224, seed=seed)
    samples = [ds[i] for i in range(n)]
    image = torch.stack([s["image"] for s in samples])
    cell = torch.stack([s["cell_mask"] for s in samples]).bool()
    return image, cell


def _scores(mask: Tensor, truth: Tensor) -> tuple[float, float, float]:
    """Mean per-image recall, precision and IoU of ``mask`` against ``truth``."""
    tp = (mask & truth).flatten(1).sum(1).double()
    fp = (mask & ~truth).flatten(1).sum(1).double()
    fn = (~mask & truth).flatten(1).sum(1).double()
    recall = tp / (tp + fn).clamp_min(1)
    precision = tp / (tp + fp).clamp_min(1)
    iou = tp / (tp + fp + fn).clamp_min(1)
    return float(recall.mean()), float(precision.mean()), float(iou.mean())


ALL = [HistogramEqualization(), CLAHE(), Grayscale(), BackgroundRemoval()]
IDS = ["equalize", "clahe", "grayscale", "background"]


# -- histogram equalisation and CLAHE -------------------------------------------------------------
@pytest.mark.parametrize("module", [HistogramEqualization(), CLAHE()], ids=["equalize", "clahe"])
def test_equalisation_keeps_hue(module: nn.Module) -> None:
    x = _low_contrast(2).float() / 255
    out = module(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Chroma (Cb, Cr) is unchanged wherever the new colour did not have to be clamped.
    unclipped = ((out > 0.002) & (out < 0.998)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert unclipped.float().mean() > 0.8
    torch.testing.assert_close(_chroma(out)[unclipped], _chroma(x)[unclipped], atol=2e-4, rtol=0)


def test_histogram_equalization_spreads_luminance() -> None:
    x = _low_contrast(2).float() / 255
    y_in, y_out = KC.rgb_to_ycbcr(x)[:, 0], KC.rgb_to_ycbcr(HistogramEqualization()(x))[:, 0]
    assert float(y_in.max() - y_in.min()) < 0.25
    assert float(y_out.std()) > 3 * float(y_in.std())
    for img in y_out:
        assert float(img.min()) < 0.05 and float(img.max()) > 0.95


def test_clahe_raises_local_contrast() -> None:
    x = _low_contrast(2, size=128).float() / 255
    y_in = KC.rgb_to_ycbcr(x)[:, :1]
    y_out = KC.rgb_to_ycbcr(CLAHE(clip_limit=4.0)(x))[:, :1]
    assert _local_std(y_out) > 2 * _local_std(y_in)
    assert float(y_out.std()) > 2 * float(y_in.std())


@pytest.mark.parametrize("module", [HistogramEqualization(), CLAHE()], ids=["equalize", "clahe"])
def test_gray_input_stays_gray(module: nn.Module) -> None:
    gray = _low_contrast(1)[:, :1].expand(-1, 3, -1, -1)
    colour = _low_contrast(1, seed=3)
    out = module(torch.cat([gray, colour]))
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    assert float(out[0].std()) > 1.5 * float((gray.float() / 255).std())
    assert not torch.equal(out[1, 0], out[1, 2])  # the colour image keeps its colour


def test_clahe_validates() -> None:
    with pytest.raises(ValueError, match="clip_limit must be a finite number >= 0"):
        CLAHE(clip_limit=-1.0)
    with pytest.raises(ValueError, match="grid_size must be two positive integers"):
        CLAHE(grid_size=(0, 8))
    with pytest.raises(ValueError, match="grid_size must be two positive integers"):
        CLAHE(grid_size=(8,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"8x8 pixels are too small for grid_size \(8, 8\)"):
        CLAHE()(torch.rand(1, 3, 8, 8))


# -- grayscale -----------------------------------------------------------------------------------
def test_grayscale_weights_and_channels() -> None:
    x = torch.zeros(3, 3, 4, 4)
    for c in range(3):
        x[c, c] = 1.0
    out = Grayscale()(x)
    assert out.shape == (3, 3, 4, 4) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]))
    single = Grayscale(keep_channels=False)(x)
    assert single.shape == (3, 1, 4, 4)
    torch.testing.assert_close(single, out[:, :1])


# -- background removal --------------------------------------------------------------------------
def test_background_removal_on_synthetic_cells() -> None:
    image, cell = _synthetic()
    module = BackgroundRemoval()
    mask = module.mask(image)
    assert mask.dtype == torch.bool and mask.shape == cell.shape
    recall, precision, _ = _scores(mask, cell)
    # Measured on these 12 cells: recall 0.99, precision 0.97.
    assert recall >= 0.95
    assert precision >= 0.9
    out = module(image)
    expanded = mask.expand_as(out)
    assert torch.equal(out[~expanded], torch.zeros(int((~expanded).sum())))
    torch.testing.assert_close(out[expanded], image.float()[expanded] / 255)


def test_background_removal_options() -> None:
    image, _ = _synthetic(4)
    base = BackgroundRemoval().mask(image)
    wider = BackgroundRemoval(margin=5).mask(image)
    assert bool((wider | ~base).all()) and int(wider.sum()) > int(base.sum())
    every = BackgroundRemoval(keep_centre=False).mask(image)
    assert bool((every | ~base).all())  # the central component is one of all the components
    out = BackgroundRemoval(fill=1.0)(image)
    assert bool((out[~base.expand_as(out)] == 1.0).all())


def test_background_removal_constant_image_is_kept() -> None:
    flat = torch.full((2, 3, 32, 32), 0.7)
    assert bool(BackgroundRemoval().mask(flat).all())
    torch.testing.assert_close(BackgroundRemoval()(flat), flat)


def test_background_removal_validates() -> None:
    with pytest.raises(ValueError, match="cue must be one of"):
        BackgroundRemoval("redness")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        BackgroundRemoval(sigma=-1.0)
    with pytest.raises(ValueError, match="closing_size must be an odd integer >= 1"):
        BackgroundRemoval(closing_size=4)
    with pytest.raises(ValueError, match="opening_size must be an odd integer >= 1"):
        BackgroundRemoval(opening_size=0)
    with pytest.raises(ValueError, match="margin must be an integer >= 0"):
        BackgroundRemoval(margin=-2)
    with pytest.raises(ValueError, match=r"fill must lie in \[0, 1\]"):
        BackgroundRemoval(fill=2.0)


@pytest.mark.realdata
def test_background_removal_on_real_masks(shared_data: Path) -> None:
    """Mean recall / precision / IoU against segmentation_WBC's expert cell masks."""
    # Measured (224 px, default cue dark_and_blue): Dataset 1 R 0.859 P 0.982 IoU 0.844;
    # Dataset 2 R 0.909 P 0.869 IoU 0.794.
    floors = {"Dataset 1": (0.82, 0.95, 0.8), "Dataset 2": (0.87, 0.83, 0.75)}
    module = BackgroundRemoval()
    for subset, (min_recall, min_precision, min_iou) in floors.items():
        ds = SegmentationWBC2018(shared_data / "segmentation_WBC", subset=subset, size=224)
        masks, truths = [], []
        for start in range(0, len(ds), 50):
            samples = [ds[i] for i in range(start, min(start + 50, len(ds)))]
            masks.append(module.mask(torch.stack([s["image"] for s in samples])))
            truths.append(torch.stack([s["cell_mask"] for s in samples]).bool())
        recall, precision, iou = _scores(torch.cat(masks), torch.cat(truths))
        print(f"{subset}: recall {recall:.3f} precision {precision:.3f} IoU {iou:.3f}")
        assert recall >= min_recall, subset
        assert precision >= min_precision, subset
        assert iou >= min_iou, subset


# -- shared behaviour ----------------------------------------------------------------------------
def _mixed_batch() -> Tensor:
    """Four different 224 px images: two synthetic cells, one low-contrast, one gray."""
    cells, _ = _synthetic(2, seed=5)
    low = F.interpolate(_low_contrast(1).float(), size=(224, 224)).round().to(torch.uint8)
    gray = cells[:1, 1:2].expand(-1, 3, -1, -1)
    return torch.cat([cells, low, gray])


@pytest.mark.parametrize("module", ALL, ids=IDS)
def test_batched_equals_per_image(module: nn.Module) -> None:
    batch = _mixed_batch()
    out = module(batch)
    assert out.dtype == torch.float32 and out.shape[0] == 4
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for i in range(len(batch)):
        torch.testing.assert_close(out[i : i + 1], module(batch[i : i + 1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("module", ALL, ids=IDS)
def test_uint8_and_float_agree(module: nn.Module) -> None:
    batch = _mixed_batch()
    torch.testing.assert_close(module(batch), module(batch.float() / 255), atol=1e-6, rtol=0)


@pytest.mark.parametrize("module", ALL, ids=IDS)
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.rand(3, 16, 16), ValueError, r"expected a batch of shape \(B, C, H, W\)"),
        (torch.rand(1, 1, 16, 16), ValueError, "expected 3 channels"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.int32), TypeError, "got torch.int32"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN or infinite"),
        (torch.rand(0, 3, 16, 16), ValueError, "the batch is empty"),
        ([[0.5]], TypeError, "expected a torch.Tensor"),
    ],
    ids=["rank", "channels", "int32", "nan", "empty", "list"],
)
def test_bad_input(module: nn.Module, bad: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        module(bad)
    if isinstance(module, BackgroundRemoval):
        with pytest.raises(error, match=match):
            module.mask(bad)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize("module", ALL, ids=IDS)
def test_cuda_matches_cpu(module: nn.Module) -> None:
    batch = _mixed_batch()
    cpu = module(batch)
    cuda = module.to("cuda")(batch.to("cuda"))
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    # Equalisation reads 8-bit levels: a pixel on a level boundary may move by one level.
    diff = (cuda.cpu() - cpu).abs()
    assert float(diff.max()) <= 2 / 255 + 1e-6 or float((diff > 1e-4).float().mean()) < 1e-3
    if isinstance(module, BackgroundRemoval):
        mismatch = (module.mask(batch.to("cuda")).cpu() != module.mask(batch)).float().mean()
        assert float(mismatch) < 5e-3
