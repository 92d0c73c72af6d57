"""Classification losses: focal loss and the paper's hybrid of focal loss and cross-entropy.

Both take logits of shape ``(B, C)`` (or ``(B, C, *)`` for dense outputs) and integer class
targets of shape ``(B,)`` (or ``(B, *)``), and compute in float32 whatever the input precision.

Normalisation of ``reduction="mean"``: the per-sample losses, class weights included, are
averaged over the samples that are not ignored (Lin et al.; kornia; torchvision). PyTorch's
``F.cross_entropy(weight=w)`` instead divides by the sum of the weights of the batch's targets, so
with class weights the two "mean"s differ by that factor (they agree for ``reduction="sum"`` and
without weights). When every target is ignored, ``"mean"`` returns 0 instead of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FocalLoss", "HybridFocalCELoss", "Reduction"]

#: How per-sample losses are combined.
Reduction = Literal["mean", "sum", "none"]


def _as_weights(value: Tensor | Sequence[float] | None, name: str) -> Tensor | None:
    """Validate per-class weights: a 1-D, finite, non-negative float tensor, or ``None``."""
    if value is None:
        return None
    weights = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(
            f"argument {name!r} must hold one weight per class (1-D, non-empty), "
            f"got shape {tuple(weights.shape)}"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(
            f"argument {name!r} must be finite and non-negative, got {weights.tolist()}"
        )
    return weights


def _check_gamma(gamma: float) -> float:
    """Validate the focusing parameter."""
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"argument 'gamma' must be a finite number >= 0, got {gamma!r}")
    return float(gamma)


def _check_reduction(reduction: str) -> None:
    """Validate the reduction name."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"argument 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_inputs(
    logits: Tensor, target: Tensor, weights: Tensor | None, ignore_index: int | None
) -> Tensor:
    """Validate shapes, dtypes and target range; return the mask of non-ignored targets."""
    if logits.ndim < 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a float tensor of shape (B, C) or (B, C, *), got {logits.dtype} "
            f"of shape {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape {expected} for logits of shape {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    num_classes = logits.shape[1]
    if weights is not None and weights.numel() != num_classes:
        raise ValueError(
            f"{weights.numel()} class weights given for logits with num_classes={num_classes}"
        )
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    if bool((((target < 0) | (target >= num_classes)) & valid).any()):
        bad = target[valid & ((target < 0) | (target >= num_classes))]
        raise ValueError(
            f"target holds class indices outside [0, num_classes={num_classes}): "
            f"{sorted(set(bad.tolist()))[:5]}"
            + ("" if ignore_index is None else f" (ignore_index={ignore_index})")
        )
    return valid


def _weighted_focal_ce(
    logits: Tensor,
    target: Tensor,
    weights: Tensor | None,
    gamma: float,
    focal_weight: float,
    ignore_index: int | None,
    reduction: Reduction,
) -> Tensor:
    """Per-sample ``w_t * (-log p_t) * (f * (1 - p_t)^gamma + (1 - f))``, reduced."""
    valid = _check_inputs(logits, target, weights, ignore_index)
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if focal_weight > 0:
        if gamma == 0:
            modulating = torch.ones_like(log_pt)
        else:
            # 1 - p_t as -expm1(log p_t) keeps precision near p_t = 1; the clamp keeps the
            # gradient of (1 - p_t)^gamma finite for gamma < 1.
            one_minus = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
            modulating = one_minus.pow(gamma)
        loss = loss * (focal_weight * modulating + (1.0 - focal_weight))
    if weights is not None:
        loss = loss * weights.to(loss.device)[safe_target]
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


class FocalLoss(nn.Module):
    """Multiclass focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    For each sample with target class ``t`` and softmax probability ``p_t``:
    ``loss = -alpha_t * (1 - p_t) ** gamma * log(p_t)``. ``gamma = 0`` and no ``alpha`` give
    cross-entropy; larger ``gamma`` down-weights well-classified samples. ``alpha`` is kept as
    a non-persistent buffer: it follows the module across devices but stays out of the state
    dict (tasks record class weights as hyperparameters).

    Args:
        gamma: Focusing parameter, ``>= 0``.
        alpha: Per-class weights (e.g. ``WBCDataModule.class_weights()``), or ``None``.
        reduction: ``"mean"`` (over non-ignored samples; see the module docstring), ``"sum"``
            or ``"none"`` (per-sample losses, 0 where ignored).
        ignore_index: A target value whose samples contribute nothing, or ``None``.

    Raises:
        ValueError: If ``gamma`` is negative or not finite, ``alpha`` is not a 1-D finite
            non-negative sequence, or ``reduction`` is unknown.
    """

    alpha: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        _check_reduction(reduction)
        self.reduction: Reduction = reduction
        self.ignore_index = ignore_index
        self.register_buffer("alpha", _as_weights(alpha, "alpha"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the focal loss.

        Args:
            logits: Float tensor ``(B, C)`` or ``(B, C, *)`` of unnormalised scores.
            target: Integer tensor ``(B,)`` or ``(B, *)`` of class indices in ``[0, C)``.

        Returns:
            A float32 scalar, or per-sample losses for ``reduction="none"``.

        Raises:
            ValueError: If the shapes do not match, ``target`` is not integer, holds indices
                outside ``[0, num_classes)``, or ``alpha`` has another length than ``C``.
        """
        return _weighted_focal_ce(
            logits, target, self.alpha, self.gamma, 1.0, self.ignore_index, self.reduction
        )

    def extra_repr(self) -> str:
        """Summarise the settings for ``repr``."""
        return f"gamma={self.gamma}, reduction={self.reduction!r}, ignore_index={self.ignore_index}"


class HybridFocalCELoss(nn.Module):
    """Weighted sum of focal loss and cross-entropy, the training loss of the paper.

    ``loss = focal_weight * focal + (1 - focal_weight) * cross_entropy``, computed per sample
    and then reduced. ``class_weights`` (e.g. ``WBCDataModule.class_weights()``, inverse class
    frequencies) multiply **both** terms: they act as the focal loss's ``alpha`` and as the
    cross-entropy's ``weight``, so the class balance does not change with ``focal_weight``.
    Both terms use the same ``"mean"`` normalisation (over samples; see the module docstring).

    Args:
        focal_weight: Share of the focal term, in ``[0, 1]``; 0 gives (weighted)
            cross-entropy, 1 gives :class:`FocalLoss`.
        gamma: Focusing parameter of the focal term, ``>= 0``.
        class_weights: Per-class weights applied to both terms, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: A target value whose samples contribute nothing, or ``None``.

    Raises:
        ValueError: If ``focal_weight`` is outside ``[0, 1]``, ``gamma`` is negative,
            ``class_weights`` is not a 1-D finite non-negative sequence, or ``reduction`` is
            unknown.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        focal_weight: float = 0.5,
        gamma: float = 2.0,
        class_weights: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= focal_weight <= 1.0:
            raise ValueError(f"argument 'focal_weight' must lie in [0, 1], got {focal_weight!r}")
        self.focal_weight = float(focal_weight)
        self.gamma = _check_gamma(gamma)
        _check_reduction(reduction)
        self.reduction: Reduction = reduction
        self.ignore_index = ignore_index
        weights = _as_weights(class_weights, "class_weights")
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the hybrid loss.

        Args:
            logits: Float tensor ``(B, C)`` or ``(B, C, *)`` of unnormalised scores.
            target: Integer tensor ``(B,)`` or ``(B, *)`` of class indices in ``[0, C)``.

        Returns:
            A float32 scalar, or per-sample losses for ``reduction="none"``.

        Raises:
            ValueError: If the shapes do not match, ``target`` is not integer, holds indices
                outside ``[0, num_classes)``, or ``class_weights`` has another length than ``C``.
        """
        return _weighted_focal_ce(
            logits,
            target,
            self.class_weights,
            self.gamma,
            self.focal_weight,
            self.ignore_index,
            self.reduction,
        )

    def extra_repr(self) -> str:
        """Summarise the settings for ``repr``."""
        return (
            f"focal_weight={self.focal_weight}, gamma={self.gamma}, "
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"
        )
