"""A third input for the dual branch: handcrafted nucleus features, standardised, through an MLP."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ._handcrafted_features import _SHAPE, _TEXTURE, FEATURE_NAMES

__all__ = ["FeatureBranch", "FeatureSet", "feature_names"]

#: Which handcrafted features the branch reads: ``"all"`` (the SVM's, see
#: :data:`~leukemia_wbc.models.FEATURE_NAMES`) or ``"shape_texture"`` (the nucleus's shape and
#: its grey-level texture, without the colour statistics that carry a lab's stain).
FeatureSet = Literal["all", "shape_texture"]

#: Standardised features are clipped to this many standard deviations (an outlier cell, or a
#: lab far from the training fold, cannot saturate the MLP).
_CLIP = 6.0


def feature_names(kind: FeatureSet) -> tuple[str, ...]:
    """The names of the features of a set, in the order the branch reads them.

    Args:
        kind: ``"all"`` or ``"shape_texture"``.

    Returns:
        The names, a sub-sequence of :data:`~leukemia_wbc.models.FEATURE_NAMES`.

    Raises:
        ValueError: An unknown set.
    """
    if kind == "all":
        return FEATURE_NAMES
    if kind == "shape_texture":
        return (*_SHAPE, *_TEXTURE)
    raise ValueError(f"features must be one of {get_args(FeatureSet)} or None, got {kind!r}")


class FeatureBranch(nn.Module):
    """Handcrafted features, standardised with a training fold's statistics, through an MLP.

    The statistics are buffers (saved with the weights): :meth:`fit` sets them from the
    training cells' features before training, and a branch that was never fitted refuses to
    run rather than read unscaled areas in the hundreds.

    Args:
        in_features: Number of features.
        width: Width of the two hidden layers and of the output.
        dropout: Dropout between the layers.

    Raises:
        ValueError: A non-positive ``in_features`` or ``width``.
    """

    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(self, in_features: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1 or width < 1:
            raise ValueError(
                f"feature branch widths must be positive, got {in_features} and {width}"
            )
        self.in_features = in_features
        self.out_features = width
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.register_buffer("fitted", torch.tensor(False))
        self.mlp = nn.Sequential(
            nn.Linear(in_features, width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
        )

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Set the standardisation from the training cells' features.

        Args:
            features: ``(N, in_features)`` finite features of the training cells.

        Raises:
            ValueError: Another number of features, fewer than two cells, or a non-finite value.
        """
        if features.dim() != 2 or features.shape[1] != self.in_features or len(features) < 2:
            raise ValueError(
                f"feature branch: expected (N >= 2, {self.in_features}) training features, "
                f"got {tuple(features.shape)}"
            )
        values = features.double()
        if not torch.isfinite(values).all():
            raise ValueError("feature branch: the training features hold non-finite values")
        std = values.std(dim=0)
        self.mean.copy_(values.mean(dim=0).to(self.mean.dtype))
        self.std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)).to(self.std.dtype))
        self.fitted.fill_(True)

    def forward(self, features: Tensor) -> Tensor:
        """The branch's vector ``(B, width)`` of raw features ``(B, in_features)``.

        Raises:
            ValueError: The branch was never fitted, or the features have another length.
        """
        if not bool(self.fitted):
            raise ValueError(
                "feature branch: its standardisation was never fitted; train the task with a "
                "WBCDataModule (it measures the training cells first) or call fit()"
            )
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"feature branch: expected (B, {self.in_features}) features, got "
                f"{tuple(features.shape)}"
            )
        scaled = ((features.to(self.mean.dtype) - self.mean) / self.std).clamp(-_CLIP, _CLIP)
        out: Tensor = self.mlp(scaled)
        return out
