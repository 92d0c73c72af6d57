"""The paper's classification head and the fusion of two feature vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

__all__ = [
    "AttentionFusion",
    "ClassifierHead",
    "ConcatFusion",
    "FusionKind",
    "GatedFusion",
    "make_fusion",
]

#: Fusion modules of :class:`~leukemia_wbc.models.dual_branch.DualBranchNet`.
FusionKind = Literal["concat", "gated", "attention"]


def _mlp(in_features: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.ReLU(inplace=True)]
        width = size
    return nn.Sequential(*layers), width


class ClassifierHead(nn.Module):
    """Fully connected layers with dropout, then the class logits (the paper's custom head).

    Softmax is applied by the task at inference (:meth:`predict_proba`); the forward pass returns
    logits so that the losses stay numerically stable.

    Args:
        in_features: Length of the input feature vector.
        num_classes: Number of classes.
        hidden: Widths of the hidden layers (ReLU, each preceded by dropout).
        dropout: Dropout probability before every linear layer.

    Raises:
        ValueError: Fewer than two classes, a non-positive width or dropout outside ``[0, 1)``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if in_features < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"widths must be positive, got {in_features} and {tuple(hidden)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.hidden, width = _mlp(in_features, hidden, dropout)
        self.dropout = nn.Dropout(dropout)
        self.logits = nn.Linear(width, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of ``(B, in_features)`` features."""
        logits: Tensor = self.logits(self.dropout(self.hidden(features)))
        return logits

    @torch.no_grad()
    def predict_proba(self, features: Tensor) -> Tensor:
        """Class probabilities (softmax of the logits)."""
        return self.forward(features).softmax(dim=1)


class ConcatFusion(nn.Module):
    """Concatenate the two feature vectors and project them with a small MLP.

    Args:
        dims: Lengths of the cell and nucleus feature vectors.
        out_features: Length of the fused vector.
        dropout: Dropout before the projection.
    """

    def __init__(self, dims: tuple[int, int], out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.out_features = out_features
        self.project = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(sum(dims), out_features), nn.ReLU(inplace=True)
        )

    def forward(self, cell: Tensor, nucleus: Tensor) -> Tensor:
        """Fused ``(B, out_features)`` vector of ``(B, d1)`` and ``(B, d2)`` features."""
        fused: Tensor = self.project(torch.cat([cell, nucleus], dim=1))
        return fused


class _ProjectedFusion(nn.Module):
    """Dropout and a linear projection of each branch's vector to ``out_features``."""

    def __init__(self, dims: tuple[int, int], out_features: int, dropout: float) -> None:
        super().__init__()
        self.out_features = out_features
        self.dropout = nn.Dropout(dropout)
        self.cell = nn.Linear(dims[0], out_features)
        self.nucleus = nn.Linear(dims[1], out_features)


class GatedFusion(_ProjectedFusion):
    """Project both vectors to one width and mix them with a learned per-feature gate.

    ``g = sigmoid(W [a; b])``, output ``g * a' + (1 - g) * b'`` where ``a'``, ``b'`` are the
    projections: the network learns, per feature and per sample, which branch to trust.

    Args:
        dims: Lengths of the cell and nucleus feature vectors.
        out_features: Length of the fused vector.
        dropout: Dropout before the projections.
    """

    def __init__(self, dims: tuple[int, int], out_features: int, dropout: float = 0.0) -> None:
        super().__init__(dims, out_features, dropout)
        self.gate = nn.Linear(sum(dims), out_features)

    def forward(self, cell: Tensor, nucleus: Tensor) -> Tensor:
        """Fused ``(B, out_features)`` vector of ``(B, d1)`` and ``(B, d2)`` features."""
        cell, nucleus = self.dropout(cell), self.dropout(nucleus)
        gate = torch.sigmoid(self.gate(torch.cat([cell, nucleus], dim=1)))
        mixed = gate * self.cell(cell) + (1 - gate) * self.nucleus(nucleus)
        return torch.relu(mixed)


class AttentionFusion(_ProjectedFusion):
    """Project both vectors to tokens and pool them with a learned attention weight per sample.

    Args:
        dims: Lengths of the cell and nucleus feature vectors.
        out_features: Length of the fused vector.
        dropout: Dropout before the projections.
    """

    def __init__(self, dims: tuple[int, int], out_features: int, dropout: float = 0.0) -> None:
        super().__init__(dims, out_features, dropout)
        self.score = nn.Sequential(nn.Tanh(), nn.Linear(out_features, 1))
        #: Attention weights ``(B, 2)`` (cell, nucleus) of the last forward pass.
        self.last_weights: Tensor | None = None

    def forward(self, cell: Tensor, nucleus: Tensor) -> Tensor:
        """Fused ``(B, out_features)`` vector of ``(B, d1)`` and ``(B, d2)`` features."""
        tokens = torch.stack(
            [self.cell(self.dropout(cell)), self.nucleus(self.dropout(nucleus))], dim=1
        )  # (B, 2, D)
        weights = self.score(tokens).softmax(dim=1)  # (B, 2, 1)
        self.last_weights = weights.squeeze(2).detach()
        return torch.relu((weights * tokens).sum(dim=1))


def make_fusion(
    kind: FusionKind, dims: tuple[int, int], out_features: int, dropout: float = 0.0
) -> ConcatFusion | GatedFusion | AttentionFusion:
    """Build a fusion module by name.

    Args:
        kind: ``"concat"`` (default of the library), ``"gated"`` or ``"attention"``.
        dims: Lengths of the cell and nucleus feature vectors.
        out_features: Length of the fused vector.
        dropout: Dropout before the projection(s).

    Returns:
        The fusion module; its ``out_features`` is the fused length.

    Raises:
        ValueError: An unknown ``kind`` or a non-positive ``out_features``.
    """
    if out_features < 1:
        raise ValueError(f"fusion out_features must be positive, got {out_features}")
    if kind == "concat":
        return ConcatFusion(dims, out_features, dropout)
    if kind == "gated":
        return GatedFusion(dims, out_features, dropout)
    if kind == "attention":
        return AttentionFusion(dims, out_features, dropout)
    raise ValueError(f"fusion must be one of {get_args(FusionKind)}, got {kind!r}")
