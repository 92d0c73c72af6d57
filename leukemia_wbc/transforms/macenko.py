"""Macenko stain estimation and recomposition on whole batches (the step under the normaliser).

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI
2009. See :mod:`leukemia_wbc.transforms.stain` for the method and the handling of background;
this module holds the batched estimate (:func:`estimate_stains`), the recomposition
(:func:`compose`) and the reference stain values.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .checks import check_batch

__all__ = [
    "DEFAULT_MAX_CONCENTRATIONS",
    "DEFAULT_STAIN_MATRIX",
    "StainEstimate",
    "compose",
    "estimate_stains",
    "like_input",
]

#: Reference stain matrix (columns hematoxylin, eosin; rows R, G, B optical density) and maximum
#: concentrations of the original Macenko implementation, as used by staintools / torchstain.
DEFAULT_STAIN_MATRIX: tuple[tuple[float, float], ...] = (
    (0.5626, 0.2159),
    (0.7201, 0.8012),
    (0.4062, 0.5581),
)
DEFAULT_MAX_CONCENTRATIONS: tuple[float, float] = (1.9705, 1.0308)


class StainEstimate(NamedTuple):
    """Per-image Macenko estimate of a batch.

    Attributes:
        stains: ``(B, 3, 2)`` unit OD vectors, columns hematoxylin and eosin.
        max_concentrations: ``(B, 2)`` 99th percentiles of the concentrations.
        concentrations: ``(B, 2, H * W)`` hematoxylin and eosin concentrations.
        valid: ``(B,)`` whether the image had enough tissue and a non-degenerate estimate.
        background: ``(B, H * W)`` pixels left as they are (pure black or bright plasma).
        intensity: ``(B, 3, H * W)`` the input as float intensities in ``[0, 255]``.
    """

    stains: Tensor
    max_concentrations: Tensor
    concentrations: Tensor
    valid: Tensor
    background: Tensor
    intensity: Tensor


def _masked_percentile(values: Tensor, mask: Tensor, q: float) -> Tensor:
    """Nearest-rank ``q``-th percentile of each row's masked values: ``(R, N) -> (R,)``.

    Rank ``1 + round(q / 100 * (n - 1))`` from the smallest, as ``torch.kthvalue`` would give
    on the masked values alone (torchstain's convention); computed with one ``topk`` over the
    rows, from the nearer end. Rows without masked values give 0.
    """
    n = mask.sum(dim=1)
    rank = 1 + torch.round(0.01 * q * (n - 1).clamp(min=0).double()).long()
    from_top = q > 50.0
    if from_top:
        rank = n - rank + 1  # the same element, counted from the largest
    fill = -math.inf if from_top else math.inf
    depth = int(rank.max().clamp(min=1, max=values.shape[1]))
    ranked = (
        values.masked_fill(~mask, fill).topk(depth, dim=1, largest=from_top, sorted=True).values
    )
    picked = ranked.gather(1, (rank - 1).clamp(0, depth - 1).unsqueeze(1)).squeeze(1)
    return torch.where(n > 0, picked, torch.zeros_like(picked))


def _covariance(od: Tensor, tissue: Tensor, n_tissue: Tensor) -> Tensor:
    """Covariance ``(B, 3, 3)`` of each image's tissue OD (``(B, 3, N)``, mask ``(B, N)``)."""
    weight = tissue.to(od.dtype).unsqueeze(1)  # (B, 1, N)
    count = n_tissue.clamp(min=2).to(od.dtype)
    mean = (od * weight).sum(dim=2, keepdim=True) / count.view(-1, 1, 1)
    centred = (od - mean).mul_(weight)
    return centred @ centred.transpose(1, 2) / (count - 1).view(-1, 1, 1)


def _plane_angles(cov: Tensor, od: Tensor) -> tuple[Tensor, Tensor]:
    """The plane of the two leading eigenvectors of ``cov``, and each pixel's angle in it.

    Args:
        cov: ``(B, 3, 3)`` covariance of the tissue OD.
        od: ``(B, 3, N)`` optical densities (all pixels, or a sample of them).

    Returns:
        ``(plane, phi)``: ``(B, 3, 2)`` second and first principal axes (as torchstain), and
        ``(B, N)`` angles.
    """
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device)
    _, vectors = torch.linalg.eigh(cov + 1e-9 * eye)
    plane = vectors[:, :, 1:3].to(od.dtype)
    proj = plane.transpose(1, 2) @ od  # (B, 2, N)
    return plane, torch.atan2(proj[:, 1], proj[:, 0])


def _stain_pair(plane: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Stain vectors ``(B, 3, 2)`` at angles ``lo`` and ``hi`` of ``plane``, hematoxylin first.

    Hematoxylin is the one with the larger red component.
    """
    v_lo = (plane @ torch.stack([lo.cos(), lo.sin()], dim=1).unsqueeze(2)).squeeze(2)
    v_hi = (plane @ torch.stack([hi.cos(), hi.sin()], dim=1).unsqueeze(2)).squeeze(2)
    lo_first = (v_lo[:, 0] > v_hi[:, 0]).view(-1, 1, 1)
    return torch.where(lo_first, torch.stack([v_lo, v_hi], dim=2), torch.stack([v_hi, v_lo], dim=2))


def _stain_vectors(cov: Tensor, od: Tensor, tissue: Tensor, alpha: float) -> Tensor:
    """Macenko's hematoxylin and eosin vectors of each image (not yet checked).

    The two leading eigenvectors of the tissue OD's covariance span a plane; the stain vectors
    are the directions at the ``alpha`` and ``100 - alpha`` nearest-rank percentiles of the
    tissue pixels' angle in it.

    Args:
        cov: ``(B, 3, 3)`` covariance of the tissue OD.
        od: ``(B, 3, N)`` optical densities.
        tissue: ``(B, N)`` bool, the pixels of ``od`` whose angles count.
        alpha: Percentile of the extreme angles.

    Returns:
        ``(B, 3, 2)`` stain vectors, columns hematoxylin and eosin.
    """
    plane, phi = _plane_angles(cov, od)
    lo = _masked_percentile(phi, tissue, alpha)
    hi = _masked_percentile(phi, tissue, 100.0 - alpha)
    return _stain_pair(plane, lo, hi)


def _checked(
    stains: Tensor, n_tissue: Tensor, n_pixels: int, min_tissue_fraction: float
) -> tuple[Tensor, Tensor]:
    """Which estimates hold, and the stain matrices with the invalid ones set to the default.

    Args:
        stains: ``(B, 3, 2)`` estimated stain vectors.
        n_tissue: ``(B,)`` tissue pixels of each image.
        n_pixels: Pixels per image.
        min_tissue_fraction: Images with a smaller share of tissue pixels are invalid.

    Returns:
        ``(stains, valid)``: invalid images carry :data:`DEFAULT_STAIN_MATRIX`.
    """
    default = torch.tensor(DEFAULT_STAIN_MATRIX, dtype=stains.dtype, device=stains.device)
    det = torch.linalg.det(stains.transpose(1, 2) @ stains)
    valid = (
        (n_tissue >= 10)
        & (n_tissue.to(stains.dtype) >= min_tissue_fraction * n_pixels)
        & (det > 1e-4)
        & torch.isfinite(stains).flatten(1).all(dim=1)
    )
    return torch.where(valid.view(-1, 1, 1), stains, default.expand_as(stains)), valid


def _pseudo_inverse(stains: Tensor) -> Tensor:
    """Moore-Penrose inverse ``(B, 2, 3)`` of ``(B, 3, 2)`` matrices of full column rank.

    The 2x2 normal matrix is inverted in closed form: solving against ``(B, 2, H * W)``
    right-hand sides with a general solver is an order of magnitude slower on the CPU.
    """
    g = stains.transpose(1, 2) @ stains
    a, b, d = g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]
    det = (a * d - b * b).clamp(min=1e-12)
    inv = torch.stack([torch.stack([d, -b], dim=1), torch.stack([-b, a], dim=1)], dim=1)
    return (inv / det.view(-1, 1, 1)) @ stains.transpose(1, 2)


def _intensity(batch: Tensor) -> Tensor:
    """``(B, 3, H, W)`` uint8 or float in ``[0, 1]`` -> ``(B, 3, H * W)`` float in ``[0, 255]``.

    Float values a little outside ``[0, 1]`` (which ``check_batch`` lets through) are clipped:
    an intensity below -1 has no optical density.
    """
    flat = batch.flatten(2)
    return flat.float() if batch.dtype == torch.uint8 else (flat.float() * 255.0).clamp_(0, 255)


def estimate_stains(
    batch: Tensor,
    *,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
    black_level: float = 10.0,
    min_tissue_fraction: float = 0.01,
) -> StainEstimate:
    """Macenko stain vectors, concentrations and maxima of every image of a batch.

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        io: Transmitted light intensity ``Io``.
        alpha: Percentile of the extreme angles (the other is ``100 - alpha``).
        beta: OD threshold below which a channel counts as transparent.
        black_level: Pixels at or below this intensity in every channel count as black
            background.
        min_tissue_fraction: Images with a smaller share of tissue pixels are not estimated.

    Returns:
        The :class:`StainEstimate`; invalid images carry :data:`DEFAULT_STAIN_MATRIX`.

    Raises:
        TypeError: See :func:`~leukemia_wbc.transforms.checks.check_batch`.
        ValueError: See :func:`~leukemia_wbc.transforms.checks.check_batch` (float images
            outside ``[0, 1]``, such as float images in 0-255, are refused).
    """
    check_batch(batch, "estimate_stains input")
    intensity = _intensity(batch)  # (B, 3, N)
    od = torch.log1p(intensity).neg_().add_(math.log(io))  # -log((I + 1) / Io)
    black = (intensity <= black_level).all(dim=1)
    transparent = od < beta
    bright = transparent.all(dim=1)
    tissue = ~(transparent.any(dim=1) | black)  # torchstain's ODhat, without black
    n_tissue = tissue.sum(dim=1)
    cov = _covariance(od, tissue, n_tissue)
    stains = _stain_vectors(cov, od, tissue, alpha)
    stains, valid = _checked(stains, n_tissue, od.shape[2], min_tissue_fraction)
    conc = _pseudo_inverse(stains) @ od  # least squares, (B, 2, N)
    not_black = ~black
    max_c = torch.stack([_masked_percentile(conc[:, k], not_black, 99.0) for k in range(2)], dim=1)
    valid = valid & (max_c > 1e-6).all(dim=1)
    return StainEstimate(stains, max_c, conc, valid, black | bright, intensity)


def compose(
    batch: Tensor, estimate: StainEstimate, mixing: Tensor, io: float, *, keep_background: bool
) -> Tensor:
    """Recompose a batch from concentrations: ``Io * exp(-mixing @ C)``, clipped at 255.

    The result has the batch's dtype and range. Images whose estimate is invalid, and (with
    ``keep_background``) background pixels, are the batch's own values, bit-exact.

    Args:
        batch: The ``(B, 3, H, W)`` batch the estimate was made on (uint8 or float in
            ``[0, 1]``).
        estimate: The batch's :class:`StainEstimate` (its concentrations may be modified copies).
        mixing: ``(B, 3, 2)`` or ``(3, 2)`` stain matrix to compose with.
        io: Transmitted light intensity ``Io``.
        keep_background: Leave black and bright pixels as they are.

    Returns:
        ``(B, 3, H, W)`` images like ``batch``.
    """
    out = torch.exp(math.log(io) - mixing @ estimate.concentrations).clamp_(max=255.0)
    result = like_input(out.view_as(batch), batch)
    keep = ~estimate.valid.view(-1, 1, 1, 1)
    if keep_background:
        keep = keep | estimate.background.view(batch.shape[0], 1, *batch.shape[2:])
    return torch.where(keep, batch, result)


def like_input(intensity: Tensor, reference: Tensor) -> Tensor:
    """Intensities in ``[0, 255]`` back to the reference's dtype and range.

    Args:
        intensity: Float intensities in ``[0, 255]`` (modified in place for uint8 output).
        reference: The input batch whose dtype to match (uint8, or float in ``[0, 1]``).

    Returns:
        uint8 (rounded) or float in ``[0, 1]``, like ``reference``.
    """
    if reference.dtype == torch.uint8:
        return intensity.add_(0.5).clamp_(0, 255).to(torch.uint8)  # round half up
    return (intensity / 255.0).clamp(0.0, 1.0).to(reference.dtype)
