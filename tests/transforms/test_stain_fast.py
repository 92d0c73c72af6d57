"""The Macenko normaliser's fast path: the estimate on pixel samples, the one-pass transform."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import Tensor

from leukemia_wbc.transforms.macenko import DEFAULT_STAIN_MATRIX, compose, estimate_stains
from leukemia_wbc.transforms.macenko_sample import classify_pixels
from leukemia_wbc.transforms.stain import MacenkoNormalizer

DEFAULT = torch.tensor(DEFAULT_STAIN_MATRIX) / torch.tensor(DEFAULT_STAIN_MATRIX).norm(dim=0)
OTHER = torch.tensor([[0.70, 0.35], [0.66, 0.86], [0.27, 0.37]])
OTHER = OTHER / OTHER.norm(dim=0)

#: Real images of both labs (segmentation_WBC), by folder and file stem.
REAL = [("Dataset 1", f"{k:03d}") for k in (1, 2, 3, 4)] + [
    ("Dataset 2", f"{k:03d}") for k in (1, 2, 3, 4)
]


def _max_angle(a: Tensor, b: Tensor) -> Tensor:
    """Larger hematoxylin / eosin angle in degrees between ``(B, 3, 2)`` stain matrices."""
    cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.rad2deg(torch.acos(cos.double().clamp(-1.0, 1.0))).amax(dim=1)


def _cell(size: int = 224, *, seed: int = 0, stains: Tensor = DEFAULT) -> Tensor:
    """A stained round cell on bright plasma, with noisy, textured concentrations.

    Args:
        size: Image side in pixels.
        seed: Seed of the noise.
        stains: ``(3, 2)`` unit OD vectors.

    Returns:
        ``(3, size, size)`` uint8; at 224 px it has far more tissue pixels than a sample.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2).sqrt()
    nucleus, cell = radius < 0.22 * size, radius < 0.42 * size
    noise = torch.rand(4, size, size, generator=g)
    texture = 0.5 + 0.5 * torch.sin(xx / 5.0 + seed) * torch.cos(yy / 7.0)
    h = torch.where(nucleus, 0.6 + 0.5 * noise[0] + 0.4 * texture, 0.05 * noise[1])
    e = torch.where(nucleus, 0.1 * noise[2], 0.25 + 0.5 * noise[3] * texture)
    od = torch.einsum("ck,khw->chw", stains, torch.stack([h, e]) * cell)
    return (240.0 * torch.exp(-od) - 1.0).round().clamp(0, 255).to(torch.uint8)


def _cells() -> Tensor:
    """Four 224 px cells in two stains, ``(4, 3, 224, 224)`` uint8."""
    return torch.stack([_cell(seed=s, stains=k) for s, k in enumerate([DEFAULT, OTHER] * 2)])


def _real(shared_data: Path) -> Tensor:
    """The :data:`REAL` images at 224x224, ``(8, 3, 224, 224)`` uint8."""
    from leukemia_wbc.data import SegmentationWBC2018

    root = shared_data / "segmentation_WBC"
    if not root.is_dir():
        pytest.skip("segmentation_WBC not present")
    ds = SegmentationWBC2018(root, size=224)
    where = {(Path(p).parent.name, Path(p).stem): i for i, p in enumerate(ds.paths)}
    return torch.stack([ds[where[key]]["image"] for key in REAL])


def _agreement(images: Tensor) -> tuple[Tensor, Tensor]:
    """Angles (degrees) and MAD (grey levels) between the sampled and the full-pixel normaliser.

    Args:
        images: ``(B, 3, H, W)`` uint8.

    Returns:
        ``(angles, mad)``, both ``(B,)``.
    """
    reference = images[0]
    sampled = MacenkoNormalizer().fit(reference)
    full = MacenkoNormalizer(sample=None).fit(reference)
    angles = _max_angle(sampled.estimate(images).stains, estimate_stains(images).stains)
    diff = sampled.normalize(images)[0].float() - full.normalize(images)[0].float()
    return angles, diff.abs().mean(dim=(1, 2, 3))


# -- the sample estimate against the full one ------------------------------------------------------
@pytest.mark.realdata
def test_sample_estimate_agrees_with_full_on_real_images(shared_data: Path) -> None:
    images = _real(shared_data)
    assert bool(estimate_stains(images).valid.all())
    tissue = classify_pixels(images, io=240.0, beta=0.15, black_level=10.0).tissue
    assert bool((tissue.sum(dim=1) > MacenkoNormalizer().sample).all())  # really a sample
    angles, mad = _agreement(images)
    assert float(angles.max()) < 1.0, angles
    assert float(mad.max()) < 1.5, mad


def test_sample_estimate_agrees_with_full_on_synthetic_cells() -> None:
    images = _cells()
    angles, mad = _agreement(images)
    assert float(angles.max()) < 1.0, angles
    assert float(mad.max()) < 1.0, mad


def test_small_images_use_every_pixel() -> None:
    images = torch.nn.functional.interpolate(_cells().float(), size=48).round().to(torch.uint8)
    sampled, full = MacenkoNormalizer().estimate(images), estimate_stains(images)
    torch.testing.assert_close(sampled.stains, full.stains, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        sampled.max_concentrations, full.max_concentrations, atol=1e-5, rtol=1e-5
    )
    out = MacenkoNormalizer().fit(images[0]).normalize(images)[0]
    out_full = MacenkoNormalizer(sample=None).fit(images[0]).normalize(images)[0]
    assert int((out.int() - out_full.int()).abs().max()) <= 1


# -- the one-pass transform against the step-by-step one -------------------------------------------
@pytest.mark.parametrize("sample", [None, 4096])
def test_one_pass_transform_equals_step_by_step(sample: int | None) -> None:
    x = torch.cat([_cells(), torch.full((1, 3, 224, 224), 250, dtype=torch.uint8)])
    normalizer = MacenkoNormalizer(sample=sample).fit(_cell(seed=9, stains=OTHER))
    for batch in (x.float() / 255, x):
        est = normalizer.estimate(batch)  # the same estimate, with every pixel's concentrations
        scale = normalizer.max_concentrations / est.max_concentrations.clamp(min=1e-6)
        mixing = normalizer.stain_matrix.unsqueeze(0) * scale.unsqueeze(1)
        stepwise = compose(batch, est, mixing, normalizer.io, keep_background=True)
        one_pass, passthrough = normalizer.normalize(batch)
        assert passthrough.tolist() == [False] * 4 + [True]
        if batch.dtype == torch.uint8:  # rounding may tip a value by one grey level
            diff = (one_pass.int() - stepwise.int()).abs()
            assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
        else:
            torch.testing.assert_close(one_pass, stepwise, atol=2e-5, rtol=0)


# -- determinism -----------------------------------------------------------------------------------
def test_sampled_normalisation_is_deterministic() -> None:
    x, reference = _cells(), _cell(seed=7)
    first = MacenkoNormalizer().fit(reference)
    out = first.normalize(x)[0]
    assert torch.equal(first.normalize(x)[0], out)  # again
    assert torch.equal(MacenkoNormalizer().fit(reference).normalize(x)[0], out)  # new instance
    assert torch.equal(MacenkoNormalizer(cpu_chunk=1).fit(reference).normalize(x)[0], out)
    for i in range(len(x)):  # alone as in the batch
        assert torch.equal(first.normalize(x[i : i + 1])[0][0], out[i])
    other_seed = MacenkoNormalizer(seed=1).estimate(x).stains
    assert not torch.equal(other_seed, first.estimate(x).stains)  # the seed picks the sample
    assert float(_max_angle(other_seed, first.estimate(x).stains).max()) < 1.0


# -- pass-through, scratch memory, arguments -------------------------------------------------------
@pytest.mark.parametrize("as_float", [False, True], ids=["uint8", "float"])
def test_sampled_pass_through_is_unchanged(as_float: bool) -> None:
    low = torch.full((3, 224, 224), 250, dtype=torch.uint8)
    low[:, :20, :20] = _cell(20, seed=3)  # 400 tissue pixels of 50176: below 1 %
    x = torch.stack([_cell(seed=1), torch.full((3, 224, 224), 255, dtype=torch.uint8), low])
    x = x.float() / 255 if as_float else x
    normalizer = MacenkoNormalizer().fit(_cell(seed=2, stains=OTHER))
    out, passthrough = normalizer.normalize(x)
    assert passthrough.tolist() == [False, True, True]
    assert torch.equal(out[1:], x[1:])  # bit for bit
    assert not torch.equal(out[0], x[0])


def test_scratch_memory_is_not_state() -> None:
    normalizer = MacenkoNormalizer().fit(_cell(seed=5, stains=OTHER))
    fresh = copy.deepcopy(normalizer)
    batches = [_cells(), _cells()[:2, :, :64, :80].contiguous(), _cells().float() / 255]
    for x in batches:  # shapes and dtypes change from call to call
        assert torch.equal(normalizer.normalize(x)[0], copy.deepcopy(fresh).normalize(x)[0])
    assert set(normalizer.state_dict()) == {"stain_matrix", "max_concentrations", "fitted"}
    assert "_work" in normalizer.__dict__
    assert "_work" not in copy.deepcopy(normalizer).__dict__
    assert "_work" not in pickle.loads(pickle.dumps(normalizer)).__dict__


def test_old_state_dict_loads() -> None:
    old = {  # the buffers a checkpoint of the previous release holds
        "stain_matrix": OTHER.clone(),
        "max_concentrations": torch.tensor([1.5, 0.9]),
        "fitted": torch.tensor(True),
    }
    normalizer = MacenkoNormalizer()
    normalizer.load_state_dict(old)
    assert bool(normalizer.fitted) and torch.equal(normalizer.stain_matrix, OTHER)
    out, _ = normalizer.normalize(_cells())
    assert math.isfinite(float(out.float().mean()))


@pytest.mark.parametrize("sample", [0, 99, -5])
def test_sample_must_be_large_enough(sample: int) -> None:
    with pytest.raises(ValueError, match="sample must be None or at least 100"):
        MacenkoNormalizer(sample=sample)


@pytest.mark.parametrize("as_float", [False, True], ids=["uint8", "float"])
def test_pixel_classes_are_the_full_estimates(as_float: bool) -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 3, 56, 56), generator=g).to(torch.uint8)
    x = torch.cat([_cells()[:2], noise.repeat_interleave(4, 2).repeat_interleave(4, 3)])
    x[:, :, :8] = 0  # black rows
    x = x.float() / 255 if as_float else x
    classes = classify_pixels(x, io=240.0, beta=0.15, black_level=10.0)
    intensity = x.flatten(2).float() * (1.0 if x.dtype == torch.uint8 else 255.0)
    od = torch.log1p(intensity).neg_().add_(math.log(240.0))  # as estimate_stains computes it
    black = (intensity <= 10.0).all(dim=1)
    transparent = od < 0.15
    assert torch.equal(classes.tissue, ~(transparent.any(dim=1) | black))
    assert torch.equal(classes.not_black, ~black)
    assert torch.equal(classes.background, estimate_stains(x).background)
    assert bool(black.any()) and bool(transparent.all(dim=1).any())  # every class occurs
