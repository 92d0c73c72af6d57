"""Macenko's stain estimate on pixel samples (the estimate of the normaliser's fast path).

The stain vectors' angles and the 99th-percentile concentrations are percentiles of an image's
pixels: here they are taken on a fixed count of its pixels instead of all of them. Two samples
are drawn per image, of its tissue pixels (the angles) and of its non-black pixels (the maximum
concentrations, over the same pixels as the full estimate). Each is stratified and seeded: the
image's ``n`` candidate pixels, in raster order, are cut into ``m = min(n, sample)`` runs of
equal length and one pixel is taken from each run at a seeded offset. A sample depends on nothing
but the image and the seed (the same in a batch as alone), covers the whole cell, and is every
candidate when there are at most ``sample`` of them (the estimate is then the full one).

The covariance whose two leading eigenvectors span the stains' plane is not sampled: on real
cells its second and third eigenvalues can be close, and the plane of a sample of even half the
pixels then turns by degrees. :func:`tissue_moments` sums it over every tissue pixel in one
product per batch chunk (see ``docs/pipeline.md`` for the measurements).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .macenko import (
    _checked,
    _covariance,
    _intensity,
    _plane_angles,
    _pseudo_inverse,
    _stain_pair,
)

__all__ = [
    "PixelClasses",
    "SamplePlan",
    "Samples",
    "StainFit",
    "classify_pixels",
    "fit_samples",
    "od_table",
    "plan_samples",
    "take_samples",
    "tissue_moments",
]


class PixelClasses(NamedTuple):
    """Per-pixel classes of a batch, as the full estimate draws them.

    Attributes:
        tissue: ``(B, N)`` no channel transparent (OD at least ``beta``), not black.
        not_black: ``(B, N)`` some channel brighter than the black level.
        background: ``(B, N)`` black, or transparent in every channel (bright plasma).
    """

    tissue: Tensor
    not_black: Tensor
    background: Tensor


class StainFit(NamedTuple):
    """Per-image Macenko estimate without the per-pixel concentrations.

    Attributes:
        stains: ``(B, 3, 2)`` unit OD vectors, columns hematoxylin and eosin.
        max_concentrations: ``(B, 2)`` 99th percentiles of the concentrations.
        valid: ``(B,)`` enough tissue and a non-degenerate estimate.
    """

    stains: Tensor
    max_concentrations: Tensor
    valid: Tensor


class SamplePlan(NamedTuple):
    """Where each image's two samples lie (see the module's description).

    Attributes:
        positions: ``(B, 3, 2K)`` int32 positions in the image's ``(3, N)`` values: its tissue
            sample's ``K`` pixels, then its non-black sample's ``K``, in every channel.
        tissue_taken: ``(B, K)`` which tissue-sample entries hold a pixel.
        n_tissue: ``(B,)`` tissue pixels of each image (all of them, not the sample's).
        rest_taken: ``(B, K)`` which non-black-sample entries hold a pixel that is not tissue.
        n_not_black: ``(B,)`` non-black pixels of each image.
        weights: ``(B, 2)`` float64 pixels each tissue-sample and each non-black-sample entry
            stands for.
    """

    positions: Tensor
    tissue_taken: Tensor
    n_tissue: Tensor
    rest_taken: Tensor
    n_not_black: Tensor
    weights: Tensor


class Samples(NamedTuple):
    """The two pixel samples of each image of a batch, as optical densities.

    Attributes:
        tissue: ``(B, 3, K)`` OD of the tissue sample.
        rest: ``(B, 3, K)`` OD of the non-black sample (of which ``plan.rest_taken`` counts).
        plan: The :class:`SamplePlan` the samples were taken with.
    """

    tissue: Tensor
    rest: Tensor
    plan: SamplePlan

    def tissue_mean(self) -> Tensor:
        """``(B, 3, 1)`` mean OD of the tissue sample (0 for an image without tissue)."""
        weight = self.plan.tissue_taken.to(self.tissue.dtype).unsqueeze(1)
        count = self.plan.tissue_taken.sum(dim=1).clamp(min=1).view(-1, 1, 1)
        return (self.tissue * weight).sum(dim=2, keepdim=True) / count


def _od(intensity: Tensor, io: float) -> Tensor:
    """``-log((I + 1) / Io)``, computed exactly as the full estimate computes it."""
    return torch.log1p(intensity).neg_().add_(math.log(io))


def od_table(io: float, device: torch.device) -> Tensor:
    """The optical density of each uint8 intensity, ``(256,)`` float32.

    Args:
        io: Transmitted light intensity ``Io``.
        device: Where to build the table.

    Returns:
        ``-log((I + 1) / Io)`` for ``I = 0 .. 255``, the full estimate's float32 values.
    """
    return _od(torch.arange(256, dtype=torch.float32, device=device), io)


def _above(plane: Tensor, level: float) -> Tensor:
    """``plane > level`` of a uint8 plane, as uint8 0 or 1.

    A clamp and a subtraction: on the CPU much faster than a comparison, whose bool output is
    written one element at a time.
    """
    if level < 0:
        return torch.ones_like(plane)
    if level >= 255:
        return torch.zeros_like(plane)
    low = math.floor(level)
    return plane.clamp(low, low + 1).sub_(low)


def classify_pixels(batch: Tensor, *, io: float, beta: float, black_level: float) -> PixelClasses:
    """Tissue, non-black and background pixels of a batch, from each pixel's channel extremes.

    The optical density falls as the intensity rises, so "no channel transparent" is a test of
    the brightest channel and "every channel transparent" one of the darkest. uint8 planes are
    compared with integer thresholds read off the full estimate's float32 OD table, so the
    classes are the full estimate's, bit for bit.

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        io: Transmitted light intensity ``Io``.
        beta: OD threshold below which a channel counts as transparent.
        black_level: Intensity at or below which (in every channel) a pixel is black.

    Returns:
        The :class:`PixelClasses`.
    """
    flat = batch.flatten(2)
    high = torch.maximum(torch.maximum(flat[:, 0], flat[:, 1]), flat[:, 2])  # (B, N)
    low = torch.minimum(torch.minimum(flat[:, 0], flat[:, 1]), flat[:, 2])
    if batch.dtype == torch.uint8:
        opaque = (od_table(io, batch.device) >= beta).nonzero()
        opaque_max = float(opaque.max()) if len(opaque) else -1.0  # OD falls as I rises
        not_black = _above(high, black_level)
        tissue = not_black * (1 - _above(high, opaque_max))
        background = torch.maximum(1 - not_black, _above(low, opaque_max))
        return PixelClasses(*(m.view(torch.bool) for m in (tissue, not_black, background)))
    high_i, low_i = _intensity(high.unsqueeze(1))[:, 0], _intensity(low.unsqueeze(1))[:, 0]
    not_black = high_i > black_level
    tissue = (_od(high_i, io) >= beta) & not_black
    return PixelClasses(tissue, not_black, ~not_black | (_od(low_i, io) < beta))


def _all_set(mask: Tensor) -> bool:
    """Whether a bool tensor is all ``True`` (on the CPU, quickest through int64 words)."""
    flat = mask.reshape(-1).view(torch.uint8)
    if flat.numel() % 8 or not flat.is_contiguous():
        return bool(mask.all())
    return bool(flat.view(torch.int64).min() == 0x0101010101010101)


def _sample(mask: Tensor, size: int, strata: Tensor, offsets: Tensor) -> tuple[Tensor, ...]:
    """Positions of a stratified sample of each row's ``True`` entries.

    Args:
        mask: ``(B, N)`` bool candidates.
        size: Largest sample per row.
        strata: ``(size,)`` float64 permutation of ``0 .. size - 1``: the order of the runs in
            the sample (shuffled: a percentile is quicker to select from unordered values).
        offsets: ``(size,)`` float64 offsets in ``[0, 1)`` within the runs.

    Returns:
        ``(positions, taken, count)``: ``(B, size)`` int64 positions in the row (0 where not
        taken), ``(B, size)`` bool, and ``(B,)`` int64 candidates per row.
    """
    rows, length = mask.shape
    starts = torch.arange(rows + 1, device=mask.device) * length
    if _all_set(mask):  # every pixel a candidate: a candidate's rank is its position
        found, count = None, torch.full((rows,), length, device=mask.device)
    else:
        found = torch.nonzero(mask.reshape(-1)).squeeze(1)  # the candidates, row by row
        bounds = torch.searchsorted(found, starts)
        count = bounds[1:] - bounds[:-1]
    n = count.to(torch.float64).unsqueeze(1)
    m = count.clamp(max=size).unsqueeze(1)
    rank = ((strata + offsets) * n / m.clamp(min=1)).floor_()  # 0-based rank among candidates
    taken = strata < m
    rank = torch.minimum(rank, n - 1).clamp_(min=0).long().masked_fill_(~taken, 0)
    if found is None or found.numel() == 0:
        return rank, taken, count
    index = (rank + bounds[:-1].unsqueeze(1)).clamp_(max=found.numel() - 1)
    positions = torch.index_select(found, 0, index.view(-1)).view(rows, size)
    positions -= starts[:-1].unsqueeze(1)  # position in the batch -> position in the row
    return positions.masked_fill_(~taken, 0), taken, count


def plan_samples(classes: PixelClasses, *, sample: int, seed: int) -> SamplePlan:
    """Choose each image's tissue and non-black samples (see the module's description).

    Args:
        classes: The batch's :func:`classify_pixels`.
        sample: Pixels per sample and image.
        seed: Seed of the samples.

    Returns:
        The :class:`SamplePlan`.
    """
    device, length = classes.tissue.device, classes.tissue.shape[1]
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.rand(2, sample, generator=generator, dtype=torch.float64).to(device)
    strata = torch.randperm(sample, generator=generator).to(device, torch.float64)
    tissue, taken, n_tissue = _sample(classes.tissue, sample, strata, offsets[0])
    not_black, taken_all, n_not_black = _sample(classes.not_black, sample, strata, offsets[1])
    rest = taken_all & ~torch.gather(classes.tissue, 1, not_black)
    counts = torch.stack([n_tissue, n_not_black], dim=1).double()
    taken_counts = torch.stack([taken.sum(dim=1), taken_all.sum(dim=1)], dim=1)
    weights = counts / taken_counts.clamp(min=1)
    channel = torch.arange(0, 3 * length, length, device=device, dtype=torch.int32)
    index = torch.cat([tissue, not_black], dim=1).to(torch.int32).unsqueeze(1) + channel.view(3, 1)
    return SamplePlan(index, taken, n_tissue, rest, n_not_black, weights)


def take_samples(od: Tensor, plan: SamplePlan) -> Samples:
    """The optical density of the planned samples.

    Args:
        od: ``(B, 3, N)`` optical densities of a batch (or of a chunk of one).
        plan: The :class:`SamplePlan` of the same images.

    Returns:
        The :class:`Samples` (one flat ``index_select``: on the CPU several times faster than
        ``gather``).
    """
    rows, size = od.shape[0], plan.tissue_taken.shape[1]
    image = torch.arange(0, rows * 3 * od.shape[2], 3 * od.shape[2], device=od.device)
    index = plan.positions + image.to(torch.int32).view(-1, 1, 1)  # int32: a chunk is < 2**31
    picked = torch.index_select(od.reshape(-1), 0, index.view(-1)).view(rows, 3, -1)
    return Samples(picked[:, :, :size], picked[:, :, size:], plan)


def tissue_moments(od: Tensor, tissue: Tensor, shift: Tensor, scratch: Tensor) -> Tensor:
    """Sums ``[sum (x x^T), sum x]`` over each image's tissue pixels, ``x = OD - shift``.

    Centred on ``shift`` (the sample's mean, close to the exact one), the float32 sums do not
    lose the small eigenvalues to cancellation.

    Args:
        od: ``(B, 3, N)`` optical densities.
        tissue: ``(B, N)`` bool tissue pixels.
        shift: ``(B, 3, 1)`` centre.
        scratch: ``(B', 3, N)`` float32, ``B' >= B``, overwritten.

    Returns:
        ``(B, 3, 4)`` float64: the second moments beside the first.
    """
    centred = torch.sub(od, shift.to(od), out=scratch[: od.shape[0]])
    centred.mul_(tissue.view(torch.uint8).unsqueeze(1))
    return torch.cat([centred @ centred.transpose(1, 2), centred.sum(dim=2, keepdim=True)], 2)


def fit_samples(
    samples: Samples,
    *,
    alpha: float,
    min_tissue_fraction: float,
    n_pixels: int,
    moments: Tensor | None = None,
) -> StainFit:
    """Macenko stain vectors and maximum concentrations of each image from its samples.

    Args:
        samples: The images' :func:`take_samples`.
        alpha: Percentile of the extreme angles.
        min_tissue_fraction: Images with a smaller share of tissue pixels (over all of their
            pixels) are invalid.
        n_pixels: Pixels per image.
        moments: ``(B, 3, 4)`` :func:`tissue_moments` of every tissue pixel, for the covariance
            (else the tissue sample's covariance).

    Returns:
        The :class:`StainFit`; invalid images carry the default stain matrix.
    """
    plan = samples.plan
    if moments is None:
        cov = _covariance(samples.tissue, plan.tissue_taken, plan.tissue_taken.sum(dim=1))
    else:
        count = plan.n_tissue.clamp(min=2).double().view(-1, 1, 1)
        first = moments[:, :, 3:].double()
        cov = (moments[:, :, :3].double() - first @ first.transpose(1, 2) / count) / (count - 1)
    rows, taken = cov.shape[0], plan.tissue_taken
    plane, phi = _plane_angles(cov, samples.tissue)
    q = torch.tensor([alpha, 100.0 - alpha], dtype=torch.float64, device=phi.device)
    extremes = _percentiles(phi.repeat(2, 1), taken.repeat(2, 1), q.repeat_interleave(rows))
    lo, hi = extremes.view(2, rows)  # one selection for both extremes
    stains = _stain_pair(plane, lo, hi)
    stains, valid = _checked(stains, plan.n_tissue, n_pixels, min_tissue_fraction)
    max_c = _max_concentrations(_pseudo_inverse(stains), samples)
    return StainFit(stains, max_c, valid & (max_c > 1e-6).all(dim=1))


def _max_concentrations(inverse: Tensor, samples: Samples) -> Tensor:
    """99th percentiles ``(B, 2)`` of the concentrations over each image's non-black pixels.

    Stratified: the tissue sample stands for the tissue, the non-black sample's other pixels
    for the rest, each entry weighted by the pixels it stands for; the percentile is where the
    weight counted from the top reaches the full estimate's nearest rank. The top of the
    concentrations lies mostly in the tissue, whose sample is denser there: four times as
    precise as a non-black sample of the same size, as precise as one four times larger
    (measured in ``docs/pipeline.md``). With every pixel in the samples it is exact.

    Args:
        inverse: ``(B, 2, 3)`` pseudo-inverse of each image's stain matrix.
        samples: The images' :class:`Samples`.

    Returns:
        ``(B, 2)``, 0 for an image without non-black pixels.
    """
    plan, rows = samples.plan, inverse.shape[0]
    conc = inverse @ torch.cat([samples.tissue, samples.rest], dim=2)  # (B, 2, 2K)
    values = conc.transpose(0, 1).reshape(2 * rows, -1)  # (2B, 2K): hematoxylin rows first
    taken = torch.cat([plan.tissue_taken, plan.rest_taken], dim=1).repeat(2, 1)
    size = plan.tissue_taken.shape[1]
    weights = plan.weights.repeat_interleave(size, dim=1).repeat(2, 1)  # (2B, 2K)
    n = plan.n_not_black  # the full estimate's nearest rank, counted from the top, is r:
    above = (n - 1 - torch.round(0.99 * (n - 1).clamp(min=0).double())).repeat(2)  # r - 1
    lightest = plan.weights.min(dim=1).values.clamp(min=1.0).repeat(2)
    depth = int(min(values.shape[1], float((above / lightest).max()) + 2))  # enough weight
    top = values.masked_fill(~taken, -math.inf).topk(max(depth, 1), dim=1)
    reached = torch.gather(weights, 1, top.indices).cumsum(dim=1) < above.unsqueeze(1) + 0.5
    k = reached.sum(dim=1).clamp(max=top.values.shape[1] - 1)
    picked = top.values.gather(1, k.unsqueeze(1)).squeeze(1)
    picked = torch.where(torch.isfinite(picked), picked, torch.zeros_like(picked))
    return picked.view(2, rows).T * (n > 0).unsqueeze(1)


def _percentiles(values: Tensor, mask: Tensor, q: Tensor) -> Tensor:
    """Nearest-rank ``q``-th percentiles of each row's masked values, ``(R, K) -> (R,)``.

    The full estimate's convention (rank ``1 + round(q / 100 (n - 1))`` from the smallest),
    with one ``topk`` for all rows: a row whose ``q`` is below 50 is negated, so that its
    percentile lies near the top too. Rows without masked values give 0.

    Args:
        values: ``(R, K)`` values.
        mask: ``(R, K)`` bool, the values that count.
        q: ``(R,)`` float64 percentile of each row.

    Returns:
        ``(R,)`` the percentiles.
    """
    n = mask.sum(dim=1)
    rank = 1 + torch.round(0.01 * q * (n - 1).clamp(min=0).double()).long()
    low = q < 50.0
    sign = 1.0 - 2.0 * low.to(values.dtype)  # -1 where the percentile is counted from below
    from_top = torch.where(low, rank, n - rank + 1)
    depth = int(from_top.max().clamp(min=1, max=values.shape[1]))
    flipped = (values * sign.unsqueeze(1)).masked_fill_(~mask, -math.inf)
    ranked = flipped.topk(depth, dim=1, sorted=True).values
    picked = ranked.gather(1, (from_top - 1).clamp(0, depth - 1).unsqueeze(1)).squeeze(1)
    return torch.where(n > 0, picked * sign, torch.zeros_like(picked))
