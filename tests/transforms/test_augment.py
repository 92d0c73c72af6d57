"""paper_augmentation and MaskedAugmentation on SyntheticWBC batches (masks stay on the nucleus)."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
from torch import Tensor

from leukemia_wbc.data.synthetic import SyntheticWBC
from leukemia_wbc.transforms import MaskedAugmentation, StainAugment, paper_augmentation

N, SIZE = 16, 64


def _batch(n: int = N, size: int = SIZE, seed: int = 0) -> dict[str, Tensor]:
    """A SyntheticWBC batch with a float image in ``[0, 1]``.

    Args:
        n: Number of samples.
        size: Image side in pixels.
        seed: Dataset seed.

    Returns:
        Batch dict: ``image`` float32 ``(n, 3, size, size)``, ``mask`` and ``cell_mask`` uint8
        ``(n, 1, size, size)``, ``label`` long ``(n,)``.
    """
    ds = SyntheticWBC(n, size=size, seed=seed)
    samples = [ds[i] for i in range(n)]
    return {
        "image": torch.stack([s["image"] for s in samples]).float() / 255,
        "mask": torch.stack([s["mask"] for s in samples]),
        "cell_mask": torch.stack([s["cell_mask"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
    }


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """Per-image intersection over union of two boolean ``(B, 1, H, W)`` masks.

    Args:
        a: First mask.
        b: Second mask.

    Returns:
        ``(B,)`` IoU (1 where both masks are empty).
    """
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def _grey(image: Tensor) -> Tensor:
    """Mean of the RGB channels.

    Args:
        image: ``(B, 3, H, W)`` float.

    Returns:
        ``(B, 1, H, W)``.
    """
    return image.mean(dim=1, keepdim=True)


def _region_mean(values: Tensor, region: Tensor) -> Tensor:
    """Per-image mean of ``values`` over a boolean region.

    Args:
        values: ``(B, 1, H, W)``.
        region: Boolean ``(B, 1, H, W)``.

    Returns:
        ``(B,)`` means (NaN for an empty region).
    """
    r = region.to(values.dtype)
    return (values * r).flatten(1).sum(1) / r.flatten(1).sum(1)


# -- masks stay on the nucleus ---------------------------------------------------------------------
def test_masks_follow_the_geometry() -> None:
    """The issue's check: the augmented nucleus mask still covers the nucleus pixels.

    The image is replaced by an indicator (channel 0 = nucleus mask, channel 1 = cell mask), so
    the pixels that belonged to the nucleus are identifiable after the image's bilinear warp;
    the masks' nearest-neighbour warp must agree up to boundary pixels.
    """
    batch = _batch()
    indicator = torch.cat([batch["mask"], batch["cell_mask"], torch.zeros_like(batch["mask"])], 1)
    batch["image"] = indicator.float()
    aug = paper_augmentation(contrast=0.0, brightness=0.0)
    torch.manual_seed(0)
    out = aug(batch)
    nucleus = out["image"][:, :1] > 0.5
    cell = out["image"][:, 1:2] > 0.5
    assert float(_iou(nucleus, out["mask"].bool()).min()) >= 0.9
    assert float(_iou(cell, out["cell_mask"].bool()).min()) >= 0.9
    # the augmentation did move the masks (180-degree rotation range): the stale masks do not fit
    assert float(_iou(batch["mask"].bool(), out["mask"].bool()).mean()) < 0.8
    moved = [not torch.equal(out["mask"][i], batch["mask"][i]) for i in range(N)]
    assert all(moved)
    # both masks took the same geometry: the nucleus stays inside the cell
    assert bool((out["mask"] <= out["cell_mask"]).all())


def test_mask_sits_on_the_dark_nucleus_of_the_real_image() -> None:
    batch = _batch()
    torch.manual_seed(1)
    out = paper_augmentation(contrast=0.0, brightness=0.0)(batch)
    nucleus = out["mask"].bool()
    cytoplasm = out["cell_mask"].bool() & ~nucleus
    assert bool((nucleus.flatten(1).sum(1) > 0).all())
    grey = _grey(out["image"])
    inside, around = _region_mean(grey, nucleus), _region_mean(grey, cytoplasm)
    # the nucleus is darker than the cytoplasm around it, in every augmented image
    assert bool((inside < around - 0.05).all()), (inside, around)
    # the augmented mask sees the same nucleus as before (geometry keeps the pixel values)
    before = _region_mean(_grey(batch["image"]), batch["mask"].bool())
    # (measured: mean 0.004, max 0.026 where part of a nucleus left the frame)
    error = (inside - before).abs()
    assert float(error.mean()) < 0.01 and float(error.max()) < 0.04
    # a control that the check has power: the un-augmented mask on the augmented image misses
    # (measured: mean 0.054)
    stale = (_region_mean(grey, batch["mask"].bool()) - before).abs()
    assert float(stale.mean()) > 3 * float(error.mean())


def test_mask_on_nucleus_with_colour_jitter() -> None:
    batch = _batch(seed=3)
    torch.manual_seed(2)
    out = paper_augmentation()(batch)  # the default: with contrast and brightness jitter
    nucleus = out["mask"].bool()
    cytoplasm = out["cell_mask"].bool() & ~nucleus
    grey = _grey(out["image"])
    inside, around = _region_mean(grey, nucleus), _region_mean(grey, cytoplasm)
    assert bool((inside < around).all()), (inside, around)


# -- the batch contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("mask_dtype", [torch.uint8, torch.int64, torch.bool])
def test_masks_keep_dtype_and_stay_binary(mask_dtype: torch.dtype) -> None:
    batch = _batch(8)
    batch["mask"] = batch["mask"].to(mask_dtype)
    torch.manual_seed(0)
    out = paper_augmentation()(batch)
    assert out["mask"].dtype == mask_dtype and out["mask"].shape == batch["mask"].shape
    assert out["cell_mask"].dtype == torch.uint8
    for key in ("mask", "cell_mask"):
        assert set(out[key].unique().int().tolist()) <= {0, 1}
        assert int(out[key].sum()) > 0
    assert out["image"].shape == batch["image"].shape and out["image"].dtype == torch.float32
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    assert torch.equal(out["label"], batch["label"])  # other keys pass through
    assert out is not batch and batch["image"].shape == (8, 3, SIZE, SIZE)  # input not replaced


def test_image_range_is_clamped_with_strong_jitter() -> None:
    batch = _batch(8)
    torch.manual_seed(0)
    out = paper_augmentation(contrast=0.9, brightness=0.9)(batch)
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    assert not torch.allclose(out["image"], batch["image"])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_non_float_image_raises(dtype: torch.dtype) -> None:
    batch = _batch(2)
    batch["image"] = (batch["image"] * 255).to(dtype)
    with pytest.raises(TypeError, match="float tensor"):
        paper_augmentation()(batch)


def test_batch_without_masks() -> None:
    batch = _batch(4)
    image_only = {"image": batch["image"], "label": batch["label"]}
    torch.manual_seed(0)
    out = paper_augmentation()(image_only)
    assert set(out) == {"image", "label"}
    assert out["image"].shape == batch["image"].shape
    assert not torch.equal(out["image"], batch["image"])
    # the same draws on the image alone as with masks (masks do not change the randomness)
    torch.manual_seed(0)
    with_masks = paper_augmentation()(batch)
    torch.testing.assert_close(out["image"], with_masks["image"])


def test_nucleus_mask_only_and_custom_keys() -> None:
    batch = _batch(4)
    only_nucleus = {"image": batch["image"], "mask": batch["mask"]}
    torch.manual_seed(0)
    out = paper_augmentation()(only_nucleus)
    assert set(out) == {"image", "mask"} and not torch.equal(out["mask"], batch["mask"])
    custom = MaskedAugmentation(K.RandomHorizontalFlip(p=1.0), mask_keys=("seg",))
    flipped = custom({"image": batch["image"], "seg": batch["mask"], "mask": batch["mask"]})
    assert torch.equal(flipped["seg"], batch["mask"].flip(-1))
    assert torch.equal(flipped["mask"], batch["mask"])  # not a mask key here: left alone
    torch.testing.assert_close(flipped["image"], batch["image"].flip(-1))


def test_reproducible_with_seed() -> None:
    batch = _batch(6)
    aug = paper_augmentation(stain=0.1)
    torch.manual_seed(7)
    a = aug(batch)
    torch.manual_seed(7)
    b = aug(batch)
    torch.manual_seed(8)
    c = aug(batch)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


# -- composition -----------------------------------------------------------------------------------
def test_paper_augmentation_steps() -> None:
    default = list(paper_augmentation().augmentations)
    kinds = [type(m) for m in default]
    assert kinds[:4] == [
        K.RandomRotation,
        K.RandomHorizontalFlip,
        K.RandomVerticalFlip,
        K.RandomAffine,
    ]
    assert K.ColorJitter in kinds and StainAugment not in kinds
    plain = [type(m) for m in paper_augmentation(contrast=0.0, brightness=0.0).augmentations]
    assert K.ColorJitter not in plain and len(plain) == 4


def _drawn_ranges(stain: StainAugment) -> dict[str, tuple[float, float]]:
    """Smallest and largest of 512 parameter draws of a stain augmentation.

    Args:
        stain: The augmentation.

    Returns:
        ``{name: (min, max)}`` for ``alpha_h``, ``alpha_e``, ``beta_h`` and ``beta_e``.
    """
    torch.manual_seed(0)
    params = stain.forward_parameters(torch.Size((512, 3, 8, 8)))
    names = ("alpha_h", "alpha_e", "beta_h", "beta_e")
    return {k: (float(params[k].min()), float(params[k].max())) for k in names}


def test_paper_augmentation_with_stain() -> None:
    steps = list(paper_augmentation(stain=0.1).augmentations)
    stains = [m for m in steps if isinstance(m, StainAugment)]
    assert len(stains) == 1 and steps[0] is stains[0]  # stain first, before any warp
    ranges = _drawn_ranges(stains[0])
    for name in ("alpha_h", "alpha_e"):
        lo, hi = ranges[name]
        assert 0.9 - 1e-6 <= lo < 0.92 and 1.08 < hi <= 1.1 + 1e-6, (name, lo, hi)
    for name in ("beta_h", "beta_e"):
        lo, hi = ranges[name]
        assert -0.1 - 1e-6 <= lo < -0.08 and 0.08 < hi <= 0.1 + 1e-6, (name, lo, hi)
    given = StainAugment(0.3, 0.05, p=1.0)
    assert paper_augmentation(stain=given).augmentations[0] is given
    # with the stain step, masks still follow the geometry
    batch = _batch(6)
    torch.manual_seed(3)
    out = paper_augmentation(stain=0.1, contrast=0.0, brightness=0.0)(batch)
    assert set(out["mask"].unique().tolist()) <= {0, 1}
    assert bool((out["mask"] <= out["cell_mask"]).all())
    assert float(_iou(out["mask"].bool(), batch["mask"].bool()).mean()) < 0.8


def test_stain_step_changes_colours_only() -> None:
    batch = _batch(6)
    stain = StainAugment(0.3, 0.3, p=1.0)
    torch.manual_seed(0)
    out = MaskedAugmentation(stain)(batch)
    assert not torch.allclose(out["image"], batch["image"], atol=1e-3)
    assert torch.equal(out["mask"], batch["mask"])
    assert torch.equal(out["cell_mask"], batch["cell_mask"])
