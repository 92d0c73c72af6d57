"""Classification tasks: ``CellClassifier`` (one branch) and ``DualBranchClassifier``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..models.backbones import Weights
from ..models.cell_net import CellNet
from ..models.dual_branch import Branch, DualBranchNet
from ..models.heads import FusionKind
from ..models.nucleus_crop import crop_nucleus
from .base import Stage
from .classifier_base import ClassificationTask, LossKind

__all__ = [
    "CellClassifier",
    "ClassificationTask",
    "DualBranchClassifier",
    "LossKind",
    "NucleusClassifier",
]


class CellClassifier(ClassificationTask):
    """One timm backbone and the paper's head on the whole cell image.

    The baselines of the paper are configurations: ``CellClassifier(backbone="resnet50")`` and
    ``CellClassifier(backbone="vgg16")``. Override :meth:`configure_models` to build another
    network; it must map a normalised image batch to logits.

    Args:
        backbone: Any timm model name.
        weights: ``None``, ``"imagenet"`` or a local weights file for the backbone.
        num_classes: Number of classes (default: the data's; see :class:`ClassificationTask`).
        head_hidden: Widths of the head's hidden layers.
        dropout: Dropout of the head.
        **kwargs: Classes, loss, metric and optimiser arguments of :class:`ClassificationTask`.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        weights: Weights = None,
        num_classes: int | None = None,
        head_hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        self.backbone_name = backbone
        self.weights = None if weights is None else str(weights)
        self.head_hidden = tuple(head_hidden)
        self.dropout = dropout
        super().__init__(num_classes=num_classes, **kwargs)

    def configure_models(self) -> None:
        """Build :attr:`net`, a :class:`~leukemia_wbc.models.cell_net.CellNet`."""
        self.net: nn.Module = CellNet(
            self.num_classes, backbone=self.backbone_name, weights=self.weights,
            head_hidden=self.head_hidden, dropout=self.dropout,
        )  # fmt: skip

    def forward(self, image: Tensor) -> Tensor:
        """Class logits of a normalised image batch."""
        logits: Tensor = self.net(image)
        return logits

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of ``batch["image"]``."""
        return self.forward(batch["image"])


class NucleusClassifier(CellClassifier):
    """One backbone on the segmented nucleus alone: a recipe against stain and context shortcuts.

    Each cell's nucleus bounding box is cut from the normalised image, everything outside the
    nucleus mask set to zero (the network's neutral input), and resized to ``nucleus_size``
    (:func:`~leukemia_wbc.models.crop_nucleus`, the dual-branch model's nucleus branch on its
    own). The model never sees the cytoplasm, the red cells or the background, so it cannot
    learn the plasma's colour or the framing of a lab. The batch must carry nucleus masks
    (``mask``), as datasets with masks and ``SyntheticWBC`` give them.

    Args:
        backbone: Any timm model name.
        nucleus_size: Side of the nucleus crops.
        **kwargs: The arguments of :class:`CellClassifier`.

    Raises:
        ValueError: A non-positive ``nucleus_size``.
    """

    needs_nucleus = True

    def __init__(
        self, backbone: str = "resnet50", *, nucleus_size: int = 128, **kwargs: Any
    ) -> None:
        if nucleus_size < 1:
            raise ValueError(f"nucleus_size must be positive, got {nucleus_size}")
        self.nucleus_size = int(nucleus_size)
        super().__init__(backbone, **kwargs)

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of the nucleus crops of ``batch["image"]`` by ``batch["mask"]``.

        Args:
            batch: The batch dict after the device stage, with ``mask``.

        Returns:
            The logits.

        Raises:
            ValueError: The batch has no ``mask``.
        """
        mask = self.nucleus_masks(batch)
        return self.forward(crop_nucleus(batch["image"], mask, self.nucleus_size).crops)


class DualBranchClassifier(ClassificationTask):
    """The paper's classifier: whole cell and nucleus branches, fused (see ``DualBranchNet``).

    The nucleus mask comes from ``batch["mask"]``; when the batch has none, from
    ``segmenter`` (a classical method name such as ``"kmeans"``, the path of a trained
    ``SegmentationModule`` checkpoint, or a module; saved with the classifier). A
    sample without nucleus pixels falls back to its whole image and is counted in
    :attr:`nucleus_fallbacks` (and logged as ``<stage>_nucleus_fallback``).

    Args:
        cell_backbone: timm name of the whole-cell branch.
        nucleus_backbone: timm name of the nucleus branch.
        cell_weights: ``None``, ``"imagenet"`` or a local file for the cell branch.
        nucleus_weights: The same for the nucleus branch.
        num_classes: Number of classes (default: the data's).
        nucleus_size: Side of the nucleus crops.
        fusion: ``"concat"``, ``"gated"`` or ``"attention"``.
        fusion_features: Length of the fused vector.
        head_hidden: Widths of the head's hidden layers.
        dropout: Dropout of the fusion and the head.
        freeze: Branch to freeze at start (``"cell"``, ``"nucleus"``) or ``None``.
        **kwargs: Classes, segmenter, loss, metric and optimiser arguments of
            :class:`ClassificationTask`.
    """

    needs_nucleus = True

    def __init__(
        self,
        cell_backbone: str = "resnet50",
        nucleus_backbone: str = "mobilenetv2_100",
        *,
        cell_weights: Weights = None,
        nucleus_weights: Weights = None,
        num_classes: int | None = None,
        nucleus_size: int = 128,
        fusion: FusionKind = "concat",
        fusion_features: int = 512,
        head_hidden: Sequence[int] = (256,),
        dropout: float = 0.5,
        freeze: Branch | None = None,
        **kwargs: Any,
    ) -> None:
        self.names = (cell_backbone, nucleus_backbone)
        self.branch_weights = tuple(None if w is None else str(w)
                                    for w in (cell_weights, nucleus_weights))  # fmt: skip
        self.nucleus_size = nucleus_size
        self.fusion_kind: FusionKind = fusion
        self.fusion_features = fusion_features
        self.head_hidden = tuple(head_hidden)
        self.dropout = dropout
        self.freeze_at_start = freeze
        super().__init__(num_classes=num_classes, **kwargs)
        #: Samples whose nucleus mask was empty (whole image used instead), since creation.
        self.nucleus_fallbacks = 0
        self._last_fallbacks = 0

    def configure_models(self) -> None:
        """Build :attr:`net`, a :class:`~leukemia_wbc.models.dual_branch.DualBranchNet`."""
        self.net = DualBranchNet(
            self.num_classes, cell_backbone=self.names[0], nucleus_backbone=self.names[1],
            cell_weights=self.branch_weights[0], nucleus_weights=self.branch_weights[1],
            nucleus_size=self.nucleus_size, fusion=self.fusion_kind,
            fusion_features=self.fusion_features, head_hidden=self.head_hidden,
            dropout=self.dropout,
        )  # fmt: skip
        if self.freeze_at_start is not None:
            self.net.freeze(self.freeze_at_start)

    def forward(self, image: Tensor, nucleus: Tensor) -> Tensor:
        """Class logits of a normalised cell batch and its nucleus crops."""
        logits: Tensor = self.net(image, nucleus)
        return logits

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of ``batch["image"]`` and its nucleus crops."""
        image: Tensor = batch["image"]
        crops = self.net.crop(image, self.nucleus_masks(batch))
        self._last_fallbacks = int(crops.empty.sum())
        self.nucleus_fallbacks += self._last_fallbacks
        return self.forward(image, crops.crops)

    def _shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        loss = super()._shared_step(batch, stage)
        self.log(f"{stage}_nucleus_fallback", float(self._last_fallbacks), reduce_fx="sum",
                 on_step=False, on_epoch=True, batch_size=len(batch["label"]),
                 sync_dist=True)  # fmt: skip
        return loss
