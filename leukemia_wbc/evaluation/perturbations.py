"""The perturbation suite of the robustness evaluation: seeded stain and acquisition shifts.

A trained model is scored on its held-out images as they are, then under controlled
perturbations at several strengths (0 = none, 1 = the strongest of the suite), each seeded so
that every model sees the same perturbed images:

* ``stain_rotation``: each image's Macenko hematoxylin and eosin vectors rotated by up to 20
  degrees (a different stain chemistry or a different lab);
* ``stain_concentration``: each stain's concentration scaled by up to +-50 % (staining time,
  smear thickness), in the manner of :class:`~leukemia_wbc.transforms.StainAugment`;
* ``brightness``, ``contrast``, ``gamma``: illumination and camera response;
* ``blur``: Gaussian defocus of up to 3 pixels (sigma);
* ``jpeg``: JPEG compression down to quality 10;
* ``resolution``: down-sampling to as little as a quarter of the side, then back.

The drop from the clean figure tells how much of a model's accuracy rests on the stain and the
camera rather than on the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import kornia.filters as KF
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from ..transforms.macenko import compose, estimate_stains

__all__ = ["PERTURBATIONS", "Perturbation", "perturb"]


#: A perturbation: ``(float batch (B, 3, H, W) in [0, 1], strength in [0, 1], generator)`` to a
#: float batch in ``[0, 1]``.
Perturbation = Callable[[Tensor, float, torch.Generator], Tensor]


def _uniform_signs(n: int, generator: torch.Generator) -> Tensor:
    return torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)


def _stain_rotation(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    est = estimate_stains(x)
    angle = math.radians(20.0) * s * _uniform_signs(len(x), g).to(x.device, est.stains.dtype)
    # rotate both vectors about the axis perpendicular to their plane (keeps them unit, in OD)
    h, e = est.stains[:, :, 0], est.stains[:, :, 1]
    axis = torch.linalg.cross(h, e)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def rotate(v: Tensor) -> Tensor:
        c, si = torch.cos(angle).unsqueeze(1), torch.sin(angle).unsqueeze(1)
        out = (
            v * c
            + torch.linalg.cross(axis, v) * si
            + axis * (axis * v).sum(1, keepdim=True) * (1 - c)
        )
        unit: Tensor = out.abs() / out.abs().norm(dim=1, keepdim=True).clamp_min(1e-6)
        return unit

    stains = torch.stack([rotate(h), rotate(e)], dim=2)
    return compose(x, est, stains, 240.0, keep_background=True)


def _stain_concentration(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    est = estimate_stains(x)
    factor = 1.0 + 0.5 * s * _uniform_signs(2 * len(x), g).view(len(x), 2, 1)
    conc = est.concentrations * factor.to(x.device, est.concentrations.dtype)
    return compose(x, est._replace(concentrations=conc), est.stains, 240.0, keep_background=True)


def _brightness(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    shift = 0.3 * s * _uniform_signs(len(x), g).to(x).view(-1, 1, 1, 1)
    return (x + shift).clamp(0, 1)


def _contrast(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    factor = 1.0 + 0.6 * s * _uniform_signs(len(x), g).to(x).view(-1, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * factor.clamp_min(0.1) + mean).clamp(0, 1)


def _gamma(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    gamma = torch.exp(math.log(2.0) * s * _uniform_signs(len(x), g)).to(x).view(-1, 1, 1, 1)
    return x.clamp_min(1e-6) ** gamma


def _blur(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    sigma = 3.0 * s
    if sigma < 0.1:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    return KF.gaussian_blur2d(x, (k, k), (sigma, sigma), "reflect")


def _jpeg(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    quality = max(1, round(100 - 90 * s))
    out = []
    for image in (x * 255).round().clamp(0, 255).to(torch.uint8).cpu():
        out.append(decode_jpeg(encode_jpeg(image, quality=quality)))
    return torch.stack(out).to(x.device).float() / 255


def _resolution(x: Tensor, s: float, g: torch.Generator) -> Tensor:
    factor = 1.0 - 0.75 * s
    if factor > 0.99:
        return x
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))),
                          mode="area")  # fmt: skip
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


#: The perturbation suite, by name.
PERTURBATIONS: Mapping[str, Perturbation] = {
    "stain_rotation": _stain_rotation,
    "stain_concentration": _stain_concentration,
    "brightness": _brightness,
    "contrast": _contrast,
    "gamma": _gamma,
    "blur": _blur,
    "jpeg": _jpeg,
    "resolution": _resolution,
}


def perturb(images: Tensor, name: str, strength: float, seed: int = 0) -> Tensor:
    """Apply perturbation ``name`` at ``strength`` to a uint8 batch.

    Args:
        images: ``uint8`` ``(B, 3, H, W)``.
        name: A key of :data:`PERTURBATIONS`.
        strength: In ``[0, 1]``; 0 returns the images unchanged.
        seed: Seed of the per-image directions (sign of each shift).

    Returns:
        ``uint8`` ``(B, 3, H, W)``.

    Raises:
        ValueError: An unknown name or a strength outside ``[0, 1]``.
        TypeError: Images that are not uint8.
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; expected one of {sorted(PERTURBATIONS)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise TypeError(
            f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if strength == 0.0:
        return images
    generator = torch.Generator().manual_seed(seed)
    out = PERTURBATIONS[name](images.float() / 255, float(strength), generator)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)
