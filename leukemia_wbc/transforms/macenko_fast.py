"""Macenko normalisation of a batch in one pass per pixel (the normaliser's fast path).

Recomposing ``Io exp(-S_t diag(c_t / c) S^+ OD)`` (``S`` and ``c`` the image's stain vectors
and maximum concentrations, ``S_t`` and ``c_t`` the target's) is one per-image 3x3 matrix
``A = S_t diag(c_t / c) S^+`` applied to the optical density, then one exponential:
:func:`folded_matrix` and :func:`recompose`. :func:`normalize_batch` runs the whole normaliser:
pixel classes, the sampled estimate (:mod:`~leukemia_wbc.transforms.macenko_sample`), the
covariance over every tissue pixel and the recomposition, in chunks of images whose scratch
tensors stay in cache and are reused (fresh memory costs page faults on every call).
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import torch
from torch import Tensor

from .macenko import StainEstimate, _intensity, _pseudo_inverse, estimate_stains
from .macenko_sample import (
    SamplePlan,
    StainFit,
    classify_pixels,
    fit_samples,
    od_table,
    plan_samples,
    take_samples,
    tissue_moments,
)

__all__ = [
    "folded_matrix",
    "normalize_batch",
    "optical_density",
    "recompose",
    "sampled_estimate",
]


def optical_density(batch: Tensor, io: float, out: Tensor, index: Tensor | None = None) -> Tensor:
    """``-log((I + 1) / Io)`` of every pixel, written into ``out``.

    uint8 input goes through a 256-entry table (one int32 conversion and one gather: on the
    CPU faster than a vectorised ``log``, and the full estimate's values exactly). Float input
    is clipped to ``[0, 1]`` and takes ``log(255 x + 1)`` with a vectorised ``log``: within
    float32 rounding of the full estimate's ``log1p``, which torch computes several times more
    slowly on the CPU.

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        io: Transmitted light intensity ``Io``.
        out: ``(B', 3, H * W)`` float32 with ``B' >= B``, written in its first ``B`` rows.
        index: ``(B' * 3 * H * W,)`` int32 scratch for the table's index (uint8 input).

    Returns:
        The ``(B, 3, H * W)`` view of ``out`` that holds the optical density.
    """
    od = out[: batch.shape[0]]
    if batch.dtype == torch.uint8:
        flat = batch.reshape(-1)
        index = flat.int() if index is None else index[: flat.numel()].copy_(flat)
        torch.index_select(od_table(io, batch.device), 0, index, out=od.view(-1))
    else:
        intensity = od.copy_(batch.flatten(2)).mul_(255.0).clamp_(0.0, 255.0)  # float32 math
        torch.sub(math.log(io), intensity.add_(1.0).log_(), out=od)
    return od


def sampled_estimate(
    batch: Tensor,
    *,
    io: float,
    alpha: float,
    beta: float,
    black_level: float,
    min_tissue_fraction: float,
    sample: int,
    seed: int,
) -> StainEstimate:
    """The sampled estimate with every pixel's concentrations, as a :class:`StainEstimate`.

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        io: Transmitted light intensity ``Io``.
        alpha: Percentile of the extreme angles.
        beta: OD threshold below which a channel counts as transparent.
        black_level: Intensity at or below which (in every channel) a pixel is black.
        min_tissue_fraction: Images with a smaller share of tissue pixels are invalid.
        sample: Pixels per sample and image.
        seed: Seed of the samples.

    Returns:
        The estimate: stains and maxima from the samples (covariance over every tissue pixel),
        concentrations of every pixel.
    """
    classes = classify_pixels(batch, io=io, beta=beta, black_level=black_level)
    od = optical_density(batch, io, torch.empty(batch.shape[0], 3, batch[0, 0].numel()))
    samples = take_samples(od, plan_samples(classes, sample=sample, seed=seed))
    moments = tissue_moments(od, classes.tissue, samples.tissue_mean(), torch.empty_like(od))
    fit = fit_samples(
        samples, alpha=alpha, min_tissue_fraction=min_tissue_fraction, n_pixels=od.shape[2],
        moments=moments,
    )  # fmt: skip
    conc = _pseudo_inverse(fit.stains) @ od
    return StainEstimate(*fit[:2], conc, fit.valid, classes.background, _intensity(batch))


def folded_matrix(fit: StainFit, target_stains: Tensor, target_max: Tensor) -> Tensor:
    """Per-image ``A = S_t diag(c_t / c) S^+``: the source OD to the normalised OD.

    Args:
        fit: The images' estimate.
        target_stains: ``(3, 2)`` target stain vectors.
        target_max: ``(2,)`` target maximum concentrations.

    Returns:
        ``(B, 3, 3)`` float64.
    """
    stains = fit.stains.double()
    scale = target_max.to(stains) / fit.max_concentrations.to(stains).clamp(min=1e-6)
    mixing = target_stains.to(stains).unsqueeze(0) * scale.unsqueeze(1)  # (B, 3, 2)
    return mixing @ _pseudo_inverse(stains)


def recompose(
    batch: Tensor,
    od: Tensor,
    matrix: Tensor,
    keep: Tensor | None,
    io: float,
    out: Tensor,
    work: MutableMapping[str, Tensor],
) -> None:
    """Write ``Io exp(-A OD)``, clipped at white, into ``out``; ``keep`` pixels are the input's.

    ``exp(x)`` is computed as ``exp2(x / log 2)``, the factor folded into ``A``: torch's
    ``exp2`` runs several times faster than its ``exp`` on the CPU. uint8 output is rounded
    half up through int32 (a direct float to uint8 conversion is much slower), and the kept
    pixels are blended in with uint8 arithmetic (faster than ``torch.where``).

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
        od: ``(B, 3, H * W)`` its optical density.
        matrix: ``(B, 3, 3)`` per-image :func:`folded_matrix`.
        keep: ``(B, H * W)`` bool pixels to copy from the input (the background), or ``None``.
        io: Transmitted light intensity ``Io``.
        out: Contiguous ``(B, 3, H, W)`` like ``batch``, written in place.
        work: Scratch tensors by name, reused from call to call.
    """
    b = batch.shape[0]
    is_uint8 = batch.dtype == torch.uint8
    mapped = _scratch(work, "mapped", od.shape, torch.float32, od.device)
    # log2(Io) - A OD / log(2), in the output's range (0-255 or 0-1)
    bias = torch.full((1, 1, 1), math.log2(io if is_uint8 else io / 255.0), device=od.device)
    torch.baddbmm(bias, (matrix / -math.log(2.0)).to(od), od, out=mapped)
    mapped.exp2_()
    target = out.view(b, 3, -1)
    flat = batch.flatten(2)
    if is_uint8:
        rounded = _scratch(work, "rounded", od.shape, torch.int32, od.device)
        target.copy_(rounded.copy_(mapped.add_(0.5).clamp_(max=255.0)))  # round half up
        if keep is not None:  # target += (input - target) * keep, modulo 256
            delta = torch.sub(flat, target)
            target.add_(delta.mul_(keep.view(torch.uint8).unsqueeze(1)))
    else:
        target.copy_(mapped.clamp_(max=1.0))
        if keep is not None:
            torch.where(keep.unsqueeze(1), flat, target, out=target)


def _scratch(
    work: MutableMapping[str, Tensor], name: str, shape: torch.Size | tuple[int, ...],
    dtype: torch.dtype, device: torch.device,
) -> Tensor:  # fmt: skip
    """A tensor of ``shape`` from ``work`` (grown, never shrunk, when it is too small).

    Memory made under ``torch.inference_mode`` (Lightning's validation, ``predict``) cannot be
    written outside it (an explanation needs gradients), so it is made again there.
    """
    size = math.prod(shape)
    held = work.get(name)
    stale = held is not None and held.is_inference() and not torch.is_inference_mode_enabled()
    if (
        held is None or stale or held.dtype != dtype or held.device != device
        or held.numel() < size
    ):  # fmt: skip
        held = work[name] = torch.empty(size, dtype=dtype, device=device)
    return held[:size].view(shape)


def normalize_batch(
    batch: Tensor,
    target_stains: Tensor,
    target_max: Tensor,
    *,
    io: float,
    alpha: float,
    beta: float,
    black_level: float,
    min_tissue_fraction: float,
    sample: int | None,
    seed: int,
    keep_background: bool,
    chunk: int,
    work: MutableMapping[str, Tensor],
) -> tuple[Tensor, Tensor]:
    """Macenko-normalise a batch: the sampled (or full) estimate, then the one-pass transform.

    Args:
        batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]`` (already checked).
        target_stains: ``(3, 2)`` target stain vectors.
        target_max: ``(2,)`` target maximum concentrations.
        io: Transmitted light intensity ``Io``.
        alpha: Percentile of the extreme angles.
        beta: OD threshold below which a channel counts as transparent.
        black_level: Intensity at or below which (in every channel) a pixel is black.
        min_tissue_fraction: Images with a smaller share of tissue pass through.
        sample: Pixels per sample and image, or ``None`` for the estimate on every pixel.
        seed: Seed of the samples.
        keep_background: Leave black and bright pixels as they are.
        chunk: Images per pass over the pixels.
        work: Scratch tensors by name, reused from call to call (pass ``{}`` for none).

    Returns:
        ``(images, passthrough)`` as :meth:`MacenkoNormalizer.normalize` returns them.
    """
    rows, n_pixels = batch.shape[0], batch.shape[2] * batch.shape[3]
    parts = [(i, min(i + chunk, rows)) for i in range(0, rows, chunk)]
    shape = (parts[0][1] - parts[0][0], 3, n_pixels)
    index = None
    if batch.dtype == torch.uint8:
        index = _scratch(work, "index", (math.prod(shape),), torch.int32, batch.device)
    od_buffer = _scratch(work, "od", shape, torch.float32, batch.device)
    classes = classify_pixels(batch, io=io, beta=beta, black_level=black_level)
    plan = None if sample is None else plan_samples(classes, sample=sample, seed=seed)
    options = {"io": io, "alpha": alpha, "beta": beta, "black_level": black_level}
    out = torch.empty(batch.shape, dtype=batch.dtype, device=batch.device)
    passthrough = torch.empty(rows, dtype=torch.bool, device=batch.device)
    for i, j in parts:  # estimate and recompose a chunk while its OD is in cache
        od = optical_density(batch[i:j], io, od_buffer, index)
        if plan is None:
            est = estimate_stains(batch[i:j], **options, min_tissue_fraction=min_tissue_fraction)
            fit = StainFit(est.stains, est.max_concentrations, est.valid)
        else:  # the covariance over every tissue pixel, the percentiles over the samples
            samples = take_samples(od, SamplePlan(*(field[i:j] for field in plan)))
            centred = _scratch(work, "mapped", od.shape, torch.float32, od.device)
            moments = tissue_moments(od, classes.tissue[i:j], samples.tissue_mean(), centred)
            fit = fit_samples(
                samples,
                alpha=alpha,
                min_tissue_fraction=min_tissue_fraction,
                n_pixels=n_pixels,
                moments=moments,
            )
        matrix = folded_matrix(fit, target_stains, target_max)
        keep = classes.background[i:j] if keep_background else None
        recompose(batch[i:j], od, matrix, keep, io, out[i:j], work)
        passthrough[i:j] = ~fit.valid
    if bool(passthrough.any()):  # unchanged, bit for bit
        out[passthrough] = batch[passthrough]
    return out, passthrough
