"""``DualBranchNet``: whole cell and nucleus, two backbones, one fused head (the paper's model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ._input import check_images
from .backbones import Weights, create_backbone, feature_dim
from .feature_branch import FeatureBranch, FeatureSet, feature_names
from .heads import ClassifierHead, FusionKind, make_fusion
from .nucleus_crop import NucleusCrops, crop_nucleus

__all__ = ["Branch", "DualBranchNet", "DualBranchOptions"]

#: The two branches of :class:`DualBranchNet`.
Branch = Literal["cell", "nucleus"]


@dataclass(frozen=True)
class DualBranchOptions:
    """The settings of a :class:`DualBranchNet` (and of ``DualBranchClassifier``, which reads them).

    Attributes:
        cell_backbone: timm name of the whole-cell branch.
        nucleus_backbone: timm name of the nucleus branch.
        cell_weights: Weights of the cell branch (``None``, ``"imagenet"`` or a local file).
        nucleus_weights: Weights of the nucleus branch.
        nucleus_size: Side of the square nucleus crops.
        fusion: How the two feature vectors are combined (``"concat"``: concatenation and an
            MLP, the default; ``"gated"``; ``"attention"``).
        fusion_features: Length of the fused vector.
        head_hidden: Widths of the head's hidden layers.
        dropout: Dropout of the fusion and the head.
        features: Handcrafted nucleus features as a third input (``"all"``, or
            ``"shape_texture"`` without the colour statistics; see
            :class:`~leukemia_wbc.models.feature_branch.FeatureBranch`), or ``None``.
        feature_width: Width of the feature branch's MLP; its output joins the fused vector
            before the head.

    Raises:
        ValueError: A non-positive ``nucleus_size``, ``fusion_features`` or ``feature_width``,
            an unknown fusion or feature set, or a dropout outside ``[0, 1]``.
    """

    cell_backbone: str = "resnet50"
    nucleus_backbone: str = "mobilenetv2_100"
    cell_weights: Weights = None
    nucleus_weights: Weights = None
    nucleus_size: int = 128
    fusion: FusionKind = "concat"
    fusion_features: int = 512
    head_hidden: tuple[int, ...] = (256,)
    dropout: float = 0.5
    features: FeatureSet | None = None
    feature_width: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_hidden", tuple(int(h) for h in self.head_hidden))
        if self.nucleus_size < 1:
            raise ValueError(f"nucleus_size must be positive, got {self.nucleus_size}")
        if self.fusion_features < 1:
            raise ValueError(f"fusion_features must be positive, got {self.fusion_features}")
        if self.fusion not in get_args(FusionKind):
            raise ValueError(f"fusion must be one of {get_args(FusionKind)}, got {self.fusion!r}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must lie in [0, 1], got {self.dropout}")
        if self.features is not None:
            feature_names(self.features)  # raises for an unknown set
        if self.feature_width < 1:
            raise ValueError(f"feature_width must be positive, got {self.feature_width}")


class DualBranchNet(nn.Module):
    """Two timm backbones, one on the whole cell and one on the nucleus crop, fused.

    ``forward(image, nucleus)`` takes the whole-cell batch and the nucleus crops (see
    :func:`~leukemia_wbc.models.nucleus_crop.crop_nucleus`; :meth:`forward_masked` cuts them
    from a nucleus mask). Each branch's pooled features go through the fusion module into the
    paper's :class:`~leukemia_wbc.models.heads.ClassifierHead`. With ``options.features``, a
    third input, the cells' handcrafted features ``(B, n)``, goes through :attr:`feature_branch`
    and its vector joins the fused one before the head: ``forward(image, nucleus, features)``.

    Args:
        num_classes: Number of classes.
        options: Backbones, their weights, crop size, fusion and head (see
            :class:`DualBranchOptions`; default: ResNet-50 on the cell, MobileNetV2 on the
            nucleus, concatenation).
        in_chans: Input channels of both branches.
    """

    def __init__(
        self, num_classes: int, options: DualBranchOptions | None = None, *, in_chans: int = 3
    ) -> None:
        super().__init__()
        opts = options if options is not None else DualBranchOptions()
        #: The settings the network was built with.
        self.options = opts
        self.names = {"cell": opts.cell_backbone, "nucleus": opts.nucleus_backbone}
        self.nucleus_size = opts.nucleus_size
        self.in_chans = in_chans
        self.cell_branch = create_backbone(
            opts.cell_backbone, weights=opts.cell_weights, in_chans=in_chans
        )
        self.nucleus_branch = create_backbone(
            opts.nucleus_backbone, weights=opts.nucleus_weights, in_chans=in_chans
        )
        dims = (feature_dim(self.cell_branch), feature_dim(self.nucleus_branch))
        self.fusion = make_fusion(opts.fusion, dims, opts.fusion_features, opts.dropout)
        #: The handcrafted-feature branch (``None`` without ``options.features``).
        self.feature_branch: FeatureBranch | None = None
        width = opts.fusion_features
        if opts.features is not None:
            self.feature_branch = FeatureBranch(
                len(feature_names(opts.features)), opts.feature_width, opts.dropout
            )
            width += opts.feature_width
        self.head = ClassifierHead(
            width, num_classes, hidden=opts.head_hidden, dropout=opts.dropout
        )

    def branch(self, which: Branch) -> nn.Module:
        """The backbone of ``which`` branch.

        Raises:
            ValueError: ``which`` is not ``"cell"`` or ``"nucleus"``.
        """
        if which == "cell":
            return self.cell_branch
        if which == "nucleus":
            return self.nucleus_branch
        raise ValueError(f"branch must be 'cell' or 'nucleus', got {which!r}")

    def freeze(self, which: Branch, frozen: bool = True) -> None:
        """Freeze (or unfreeze) one branch's backbone for staged fine-tuning.

        A frozen branch keeps its parameters (``requires_grad=False``) and its batch-norm
        statistics (kept in eval mode through :meth:`train`).

        Args:
            which: ``"cell"`` or ``"nucleus"``.
            frozen: ``False`` to make it trainable again.
        """
        module = self.branch(which)
        module.requires_grad_(not frozen)
        module.train(self.training and not frozen)

    def is_frozen(self, which: Branch) -> bool:
        """Whether no parameter of ``which`` branch is trainable."""
        return not any(p.requires_grad for p in self.branch(which).parameters())

    def train(self, mode: bool = True) -> DualBranchNet:
        """Set training mode, keeping frozen branches in eval mode (their batch-norm fixed)."""
        super().train(mode)
        for which in ("cell", "nucleus"):
            if self.is_frozen(which):
                self.branch(which).eval()
        return self

    def features(self, image: Tensor, nucleus: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled features of both branches.

        Args:
            image: ``(B, C, H, W)`` normalised whole-cell batch.
            nucleus: ``(B, C, s, s)`` nucleus crops.

        Returns:
            ``(cell_features, nucleus_features)``.

        Raises:
            ValueError: A batch the backbone cannot take, or batch sizes that differ.
        """
        check_images(image, self.cell_branch, f"{self.names['cell']} (cell branch)", self.in_chans)
        check_images(
            nucleus, self.nucleus_branch, f"{self.names['nucleus']} (nucleus branch)",
            self.in_chans,
        )  # fmt: skip
        if image.shape[0] != nucleus.shape[0]:
            raise ValueError(
                f"cell batch ({image.shape[0]}) and nucleus batch ({nucleus.shape[0]}) differ"
            )
        cell: Tensor = self.cell_branch(image)
        nuc: Tensor = self.nucleus_branch(nucleus)
        return cell, nuc

    def forward(self, image: Tensor, nucleus: Tensor, features: Tensor | None = None) -> Tensor:
        """Class logits ``(B, num_classes)`` of a cell batch, its nucleus crops (and features).

        Raises:
            ValueError: ``features`` missing for a network with a feature branch, or given to
                one without.
        """
        fused = self.fusion(*self.features(image, nucleus))
        if self.feature_branch is not None:
            if features is None:
                raise ValueError(
                    "this dual branch reads handcrafted features (options.features="
                    f"{self.options.features!r}); pass them as the third input"
                )
            fused = torch.cat([fused, self.feature_branch(features)], dim=1)
        elif features is not None:
            raise ValueError("this dual branch has no feature branch; features were given")
        logits: Tensor = self.head(fused)
        return logits

    def crop(self, image: Tensor, mask: Tensor) -> NucleusCrops:
        """Nucleus crops of ``image`` at :attr:`nucleus_size` (see ``crop_nucleus``)."""
        return crop_nucleus(image, mask, self.nucleus_size)

    def forward_masked(self, image: Tensor, mask: Tensor) -> Tensor:
        """Class logits of a cell batch and its nucleus masks ``(B, 1, H, W)``."""
        return self.forward(image, self.crop(image, mask).crops)
