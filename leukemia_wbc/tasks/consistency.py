"""Stain consistency: a classifier should give a cell the same answer whatever its stain."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..transforms.augment import StainAugment

__all__ = ["StainConsistency"]


class _Classifier(Protocol):
    """What the loss needs of a classifier: its normalisation and its batch forward."""

    mean: Tensor
    std: Tensor

    def forward_batch(self, batch: dict[str, Any]) -> Tensor: ...


class StainConsistency:
    """A loss between the predictions of each training cell and of a restained copy of it.

    Each training batch (after the device pipeline, augmentation included) is de-normalised,
    its hematoxylin and eosin concentrations are perturbed again with a
    :class:`~leukemia_wbc.transforms.StainAugment` of ``strength`` (every cell, each stain's
    concentration scaled by up to ``1 +- strength`` and shifted by up to ``strength / 2``
    optical-density units), and the network runs on the copy too. The loss is the symmetric
    Kullback-Leibler divergence between the two class distributions, times ``weight``: the
    network is asked to give a cell the same answer whatever its stain, so that the colour of a
    lab stops being a way to the label. The perturbation suite's concentration shift at full
    strength (+-50 %) lies inside the default range; its stain-vector rotation does not.

    Args:
        weight: Weight of the divergence in the training loss.
        strength: Half-width of the concentration scaling of the copy.

    Raises:
        ValueError: A negative weight, or a strength outside ``(0, 1)``.
    """

    def __init__(self, weight: float, strength: float = 0.5) -> None:
        if weight < 0:
            raise ValueError(f"consistency must be at least 0, got {weight}")
        if not 0 < strength < 1:
            raise ValueError(f"consistency strength must lie in (0, 1), got {strength}")
        self.weight = float(weight)
        self.restain = StainAugment(sigma_alpha=strength, sigma_beta=strength / 2, p=1.0)

    def __call__(self, task: _Classifier, batch: dict[str, Any], logits: Tensor) -> Tensor:
        """The weighted divergence of a training batch.

        Args:
            task: The classifier (its ``mean`` / ``std`` de-normalise the batch).
            batch: The batch after the device stage.
            logits: The task's logits of ``batch``.

        Returns:
            A scalar loss.
        """
        image: Tensor = batch["image"]
        # the stain estimate needs float32 (linear algebra): not under the step's bf16 autocast
        with torch.no_grad(), torch.autocast(image.device.type, enabled=False):
            unit = (image.float() * task.std + task.mean).clamp(0.0, 1.0)
            restained = (self.restain(unit) - task.mean) / task.std
        other = task.forward_batch({**batch, "image": restained.to(image.dtype)})
        p = logits.float().log_softmax(dim=1)
        q = other.float().log_softmax(dim=1)
        both = nn.functional.kl_div(q, p, log_target=True, reduction="batchmean")
        both = both + nn.functional.kl_div(p, q, log_target=True, reduction="batchmean")
        return self.weight * both / 2
