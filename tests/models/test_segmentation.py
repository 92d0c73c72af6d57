"""Tests of leukemia_wbc.models.segmentation: smp networks, post-processing, classical methods."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import timm
import torch

from leukemia_wbc.data import SegmentationWBC2018, SyntheticWBC
from leukemia_wbc.models import (
    ClassicalMethod,
    ClassicalNucleusSegmenter,
    create_segmentation_net,
    postprocess_masks,
    segmentation_architectures,
)

METHODS: tuple[str, ...] = get_args(ClassicalMethod)
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "segmentation.py"
TINY = {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}


def _dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of (B, 1, H, W) binary masks (1 when both are empty)."""
    p, t = pred.flatten(1).float(), target.flatten(1).float()
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2 * (p * t).sum(1) / denom.clamp_min(1), torch.ones_like(denom))


def _disk(size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


@pytest.fixture(scope="module")
def synthetic() -> tuple[torch.Tensor, torch.Tensor]:
    ds = SyntheticWBC(32, size=64, seed=3)
    samples = [ds[i] for i in range(len(ds))]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["mask"] for s in samples])


# --- postprocess_masks -----------------------------------------------------------------------


def test_postprocess_keeps_central_blob_over_larger_offcentre_one() -> None:
    centre = _disk(64, 31.5, 31.5, 6)
    corner = _disk(64, 10, 10, 9)  # larger, but away from the centre
    out = postprocess_masks((centre | corner).view(1, 1, 64, 64))
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 64, 64)
    assert torch.equal(out[0, 0].bool(), centre)


def test_postprocess_largest_or_all_touching_centre() -> None:
    big = _disk(64, 31.5, 24, 7)
    small = _disk(64, 31.5, 42, 4)  # both touch the central disk (radius 0.2 * 64)
    masks = (big | small).view(1, 1, 64, 64)
    assert torch.equal(postprocess_masks(masks)[0, 0].bool(), big)
    assert torch.equal(postprocess_masks(masks, keep="all")[0, 0].bool(), big | small)


def test_postprocess_nearest_when_none_touches_centre() -> None:
    near = _disk(64, 31.5, 50, 3)
    far = _disk(64, 4, 4, 4)
    out = postprocess_masks((near | far).view(1, 1, 64, 64), centre_radius=0.1)
    assert torch.equal(out[0, 0].bool(), near)


def test_postprocess_fills_holes_and_thresholds_probabilities() -> None:
    ring = _disk(64, 31.5, 31.5, 12) & ~_disk(64, 31.5, 31.5, 5)
    probs = ring.float().view(1, 1, 64, 64) * 0.8 + 0.1  # 0.9 on the ring, 0.1 elsewhere
    out = postprocess_masks(probs)
    assert torch.equal(out[0, 0].bool(), _disk(64, 31.5, 31.5, 12))
    assert postprocess_masks(probs, threshold=0.95).sum() == 0  # empty stays empty


def test_postprocess_batched_equals_per_image(synthetic: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, masks = synthetic
    noisy = masks.clone()
    noisy[:, :, ::7, ::5] = 1  # specks that must go
    batched = postprocess_masks(noisy)
    single = torch.cat([postprocess_masks(m.unsqueeze(0)) for m in noisy])
    assert torch.equal(batched, single)


def test_postprocess_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        postprocess_masks(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        postprocess_masks([[0, 1]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="centre_radius"):
        postprocess_masks(torch.zeros(1, 1, 8, 8), centre_radius=2.0)
    with pytest.raises(ValueError, match="keep"):
        postprocess_masks(torch.zeros(1, 1, 8, 8), keep="biggest")  # type: ignore[arg-type]


# --- create_segmentation_net -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("unet", "resnet18"), ("fpn", "tu-mobilenetv2_050"), ("Unet", "tu-resnet10t")],
)
def test_create_segmentation_net_shapes(arch: str, encoder: str) -> None:
    net = create_segmentation_net(arch, encoder, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3, 64, 64)


def test_create_segmentation_net_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'unet3d'.*'unet'.*'fpn'"):
        create_segmentation_net("unet3d")
    assert "deeplabv3plus" in segmentation_architectures()
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet19'.*tu-"):
        create_segmentation_net("unet", "resnet19")
    with pytest.raises(ValueError, match="'tu-notamodel' names no timm model"):
        create_segmentation_net("unet", "tu-notamodel")
    with pytest.raises(ValueError, match="num_classes"):
        create_segmentation_net("unet", "resnet18", num_classes=0)
    with pytest.raises(ValueError, match=r"\['decoder_depth'\] are not arguments of.*'unet'"):
        create_segmentation_net("unet", "resnet18", decoder_depth=3)


def test_create_segmentation_net_size_not_divisible_by_stride() -> None:
    unet = create_segmentation_net("unet", "resnet18", **TINY)
    assert unet(torch.randn(1, 3, 44, 44)).shape == (1, 1, 44, 44)  # U-Net takes any size
    fpn = create_segmentation_net("fpn", "resnet18", encoder_depth=3)  # output stride 8
    fpn(torch.randn(1, 3, 40, 40))
    with pytest.raises(RuntimeError, match="divisible by 8"):
        fpn(torch.randn(1, 3, 44, 44))


def test_encoder_weights_from_local_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_segmentation_net("unet", "resnet18", **TINY)
    encoder_state = {k: v.clone() for k, v in source.encoder.state_dict().items()}
    # A Lightning checkpoint of a SegmentationModule: keys under "net.encoder.".
    checkpoint = {"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "task.ckpt")
    torch.save(encoder_state, tmp_path / "encoder.pth")
    for path in (tmp_path / "task.ckpt", tmp_path / "encoder.pth"):
        torch.manual_seed(1)
        net = create_segmentation_net("unet", "resnet18", encoder_weights=path, **TINY)
        for key, value in net.encoder.state_dict().items():
            assert torch.equal(value, encoder_state[key]), (path.name, key)
    with pytest.raises(ValueError, match=r"encoder_weights.*does not hold weights of the encoder"):
        create_segmentation_net("unet", "resnet34", encoder_weights=tmp_path / "encoder.pth")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        create_segmentation_net("unet", "resnet18", encoder_weights=tmp_path / "missing.pth")


def test_timm_encoder_weights_from_timm_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    timm_state = timm.create_model("mobilenetv2_050").state_dict()  # with its classifier
    torch.save(timm_state, tmp_path / "mnv2.pth")
    net = create_segmentation_net(
        "unet", "tu-mobilenetv2_050", encoder_weights=tmp_path / "mnv2.pth"
    )
    loaded = net.encoder.model.state_dict()
    assert loaded and all(torch.equal(v, timm_state[k]) for k, v in loaded.items())


# --- ClassicalNucleusSegmenter ---------------------------------------------------------------


def test_classical_has_no_parameters_and_returns_uint8(
    synthetic: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, _ = synthetic
    for method in METHODS:
        seg = ClassicalNucleusSegmenter(method)  # type: ignore[arg-type]
        assert list(seg.parameters()) == []
        out = seg(images[:2])
        assert out.dtype == torch.uint8 and out.shape == (2, 1, 64, 64)
        assert set(out.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("method", ["kmeans", "watershed", "multiotsu_darkness"])
def test_classical_batched_equals_per_image(
    method: ClassicalMethod, synthetic: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, _ = synthetic
    seg = ClassicalNucleusSegmenter(method)
    batched = seg(images[:6])
    single = torch.cat([seg(image.unsqueeze(0)) for image in images[:6]])
    assert torch.equal(batched, single)
    assert torch.equal(seg(images[:6].float() / 255), batched)  # uint8 and [0, 1] float alike


# Mean Dice on these 32 images at 64 px (measured): kmeans 0.92, watershed 0.92,
# multiotsu_darkness 0.93, otsu_hematoxylin 0.79, otsu_saturation 0.74.
@pytest.mark.parametrize(
    ("method", "floor"),
    [
        ("kmeans", 0.85),
        ("watershed", 0.85),
        ("multiotsu_darkness", 0.85),
        ("otsu_hematoxylin", 0.7),
    ],
)
def test_classical_dice_on_synthetic(
    method: ClassicalMethod, floor: float, synthetic: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, masks = synthetic
    dice = _dice(ClassicalNucleusSegmenter(method)(images), masks).mean().item()
    assert dice >= floor, f"{method}: mean Dice {dice:.3f} below {floor}"


def test_classical_bad_arguments_and_input() -> None:
    with pytest.raises(ValueError, match=r"method.*'kmeans'"):
        ClassicalNucleusSegmenter("grabcut")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'k'"):
        ClassicalNucleusSegmenter(k=1)
    with pytest.raises(ValueError, match="opening"):
        ClassicalNucleusSegmenter(opening=-0.1)
    seg = ClassicalNucleusSegmenter()
    with pytest.raises(ValueError, match=r"ClassicalNucleusSegmenter input.*\(B, C, H, W\)"):
        seg(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        seg(torch.zeros(1, 3, 8, 8, dtype=torch.int32))


# Mean Dice on the subsets below at 224 px (measured), Dataset 1 / Dataset 2:
# multiotsu_blue_green 0.966 / 0.976, kmeans 0.968 / 0.981, watershed 0.968 / 0.981,
# multiotsu_darkness 0.955 / 0.979, otsu_saturation 0.870 / 0.960, otsu_hematoxylin 0.728 / 0.800;
# the plain scikit-image reference of benchmarks/segmentation.py 0.924 / 0.945 (whole sets: the
# module docstring and docs/segmentation.md).
_REAL_FLOORS = {
    "multiotsu_blue_green": (0.94, 0.95),
    "kmeans": (0.94, 0.95),
    "watershed": (0.94, 0.95),
    "multiotsu_darkness": (0.93, 0.95),
    "otsu_saturation": (0.84, 0.92),
    "otsu_hematoxylin": (0.69, 0.76),
}


_SUBSETS = (("Dataset 1", 10), ("Dataset 2", 4))


def _subset(root: Path, subset: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = SegmentationWBC2018(root, subset=subset, size=224)
    samples = [ds[i] for i in range(0, len(ds), step)]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["mask"] for s in samples])


def _reference_dice(root: Path, subset: str, step: int) -> float:
    """Mean Dice of the plain scikit-image segmentation of ``benchmarks/segmentation.py``."""
    spec = importlib.util.spec_from_file_location("_segmentation_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    images, masks = _subset(root, subset, step)
    pred = torch.from_numpy(np.stack([bench.reference(im) for im in images.numpy()]))
    return float(_dice(pred.unsqueeze(1).to(torch.uint8), masks).mean())


@pytest.mark.realdata
def test_classical_dice_on_segmentation_wbc(shared_data: Path) -> None:
    root = shared_data / "segmentation_WBC"
    rows = {}
    for subset, step in _SUBSETS:
        images, masks = _subset(root, subset, step)
        for method in METHODS:
            seg = ClassicalNucleusSegmenter(method)  # type: ignore[arg-type]
            rows.setdefault(method, []).append(_dice(seg(images), masks).mean().item())
    print("\nmean nucleus Dice (Dataset 1 every 10th image, Dataset 2 every 4th; 224 px)")
    for method, (d1, d2) in rows.items():
        print(f"{method:20s} {d1:.3f} {d2:.3f}")
    for method, (d1, d2) in rows.items():
        floor1, floor2 = _REAL_FLOORS[method]
        assert d1 >= floor1 and d2 >= floor2, (method, d1, d2)
    default = ClassicalNucleusSegmenter().method
    for lab in (0, 1):  # the fast default is within 0.01 of the best method in both labs
        assert rows[default][lab] >= max(r[lab] for r in rows.values()) - 0.01, rows
    reference = [_reference_dice(root, subset, step) for subset, step in _SUBSETS]
    print(f"{'scikit-image reference':20s} {reference[0]:.3f} {reference[1]:.3f}")
    assert rows[default][0] >= reference[0] and rows[default][1] >= reference[1]
