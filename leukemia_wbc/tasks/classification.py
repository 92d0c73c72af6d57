"""Classification tasks: ``CellClassifier``, ``NucleusClassifier`` and ``DualBranchClassifier``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..models.backbones import Weights
from ..models.cell_net import CellNet
from ..models.dual_branch import Branch, DualBranchNet, DualBranchOptions
from ..models.feature_branch import FeatureSet
from ..models.heads import FusionKind
from .base import Stage
from .branches import BranchInput, TaskBranch
from .cell_features import CellFeatures, training_features
from .classifier_base import ClassificationTask, LossKind

__all__ = [
    "CellClassifier",
    "ClassificationTask",
    "DualBranchClassifier",
    "LossKind",
    "NucleusClassifier",
]

#: The defaults of :class:`DualBranchClassifier`'s network (one source: ``DualBranchOptions``).
_DUAL = DualBranchOptions()


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
        **kwargs: Classes, loss, metric and optimiser (``optim``) arguments of
            :class:`ClassificationTask`.
    """

    #: What the network reads: the whole image (the nucleus crop for ``NucleusClassifier``).
    branch_input: ClassVar[BranchInput] = "image"

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

    def pretrained_parts(self) -> dict[str, str]:
        """``weights``: the backbone (see :meth:`BaseTask.pretrained_parts`).

        Returns:
            ``{"weights": backbone}``.
        """
        return {"weights": self.backbone_name}

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of ``batch["image"]``."""
        return self.forward(batch["image"])

    def branches(self) -> dict[str, TaskBranch]:
        """The network's backbone, on :attr:`branch_input`.

        The backbone of the :class:`~leukemia_wbc.models.cell_net.CellNet`; the whole network
        when a subclass's :meth:`configure_models` builds another one.

        Returns:
            ``{"cell": ...}`` (``{"nucleus": ...}`` when the network reads the nucleus crop).
        """
        name = "cell" if self.branch_input == "image" else "nucleus"
        net = getattr(self, "net", None)
        if isinstance(net, CellNet):
            return {name: TaskBranch(net.backbone, self.branch_input, self.backbone_name)}
        (generic,) = super().branches().values()
        return {name: TaskBranch(generic.module, self.branch_input, generic.label)}


class NucleusClassifier(CellClassifier):
    """One backbone on the segmented nucleus alone: a recipe against stain and context shortcuts.

    Each cell's nucleus bounding box is cut from the normalised image, everything outside the
    nucleus mask set to zero (the network's neutral input), and resized to ``nucleus_size``
    (:func:`~leukemia_wbc.models.crop_nucleus`, the dual-branch model's nucleus branch on its
    own). The model never sees the cytoplasm, the red cells or the background, so it cannot
    learn the plasma's colour or the framing of a lab. The batch must carry nucleus masks
    (``mask``), as datasets with masks and ``SyntheticWBC`` give them, or the task a
    ``segmenter``.

    Args:
        backbone: Any timm model name.
        nucleus_size: Side of the nucleus crops.
        **kwargs: The arguments of :class:`CellClassifier`.

    Raises:
        ValueError: A non-positive ``nucleus_size``.
    """

    needs_nucleus = True
    branch_input: ClassVar[BranchInput] = "nucleus"

    def __init__(
        self, backbone: str = "resnet50", *, nucleus_size: int = 128, **kwargs: Any
    ) -> None:
        if nucleus_size < 1:
            raise ValueError(f"nucleus_size must be positive, got {nucleus_size}")
        self.nucleus_size = int(nucleus_size)
        super().__init__(backbone, **kwargs)

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of the nucleus crops of ``batch["image"]`` (see :meth:`nucleus_crops`).

        Args:
            batch: The batch dict after the device stage, with ``mask`` (or a segmenter).

        Returns:
            The logits.

        Raises:
            ValueError: The batch has no ``mask`` and the task no segmenter.
        """
        return self.forward(self.nucleus_crops(batch).crops)


class DualBranchClassifier(ClassificationTask):
    """The paper's classifier: whole cell and nucleus branches, fused (see ``DualBranchNet``).

    The network's arguments are those of :class:`~leukemia_wbc.models.dual_branch.DualBranchOptions`
    (their defaults come from it, and :attr:`options` holds them); the task passes them to
    :class:`~leukemia_wbc.models.DualBranchNet` as one object.

    The nucleus mask comes from ``batch["mask"]``; when the batch has none, from
    ``segmenter`` (a classical method name such as ``"kmeans"``, the path of a trained
    ``SegmentationModule`` checkpoint, or a module; saved with the classifier). A
    sample without nucleus pixels falls back to its whole image and is counted in
    :attr:`nucleus_fallbacks` (and logged as ``<stage>_nucleus_fallback``).

    With ``features``, the cells' handcrafted nucleus features (those of
    :class:`~leukemia_wbc.models.HandcraftedSVM`, measured on the decoded image with the same
    nucleus mask; see :class:`~leukemia_wbc.tasks.cell_features.CellFeatures`) are a third
    input: before the first epoch the training cells are measured once (a progress bar) and
    the branch's standardisation is fitted on them (so in cross-validation, on each fold's own
    training cells; it is saved with the weights), and each cell's vector then goes through a
    small MLP whose output joins the fused vector before the head.

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
        features: Handcrafted features as a third input: ``"all"``, ``"shape_texture"``
            (without the colour statistics, which carry a lab's stain) or ``None``.
        feature_width: Width of the feature branch's MLP.
        **kwargs: Classes, segmenter, loss, metric and optimiser (``optim``) arguments of
            :class:`ClassificationTask`.

    Raises:
        ValueError: A network setting refused by ``DualBranchOptions`` (the message names it).
    """

    needs_nucleus = True
    net: DualBranchNet

    def __init__(
        self,
        cell_backbone: str = _DUAL.cell_backbone,
        nucleus_backbone: str = _DUAL.nucleus_backbone,
        *,
        cell_weights: Weights = _DUAL.cell_weights,
        nucleus_weights: Weights = _DUAL.nucleus_weights,
        num_classes: int | None = None,
        nucleus_size: int = _DUAL.nucleus_size,
        fusion: FusionKind = _DUAL.fusion,
        fusion_features: int = _DUAL.fusion_features,
        head_hidden: Sequence[int] = _DUAL.head_hidden,
        dropout: float = _DUAL.dropout,
        freeze: Branch | None = None,
        features: FeatureSet | None = _DUAL.features,
        feature_width: int = _DUAL.feature_width,
        **kwargs: Any,
    ) -> None:
        #: The network's settings.
        self.options = DualBranchOptions(
            cell_backbone=cell_backbone, nucleus_backbone=nucleus_backbone,
            cell_weights=None if cell_weights is None else str(cell_weights),
            nucleus_weights=None if nucleus_weights is None else str(nucleus_weights),
            nucleus_size=int(nucleus_size), fusion=fusion, fusion_features=int(fusion_features),
            head_hidden=tuple(int(h) for h in head_hidden), dropout=float(dropout),
            features=features, feature_width=int(feature_width),
        )  # fmt: skip
        #: Measures the handcrafted features of a batch (``None`` without ``features``).
        self.cell_features = None if features is None else CellFeatures(features)
        self.nucleus_size = self.options.nucleus_size
        self.freeze_at_start = freeze
        super().__init__(num_classes=num_classes, **kwargs)
        #: Samples whose nucleus mask was empty (whole image used instead), since creation.
        self.nucleus_fallbacks = 0
        self._last_fallbacks = 0

    @property
    def names(self) -> tuple[str, str]:
        """The timm names of the cell and nucleus backbones."""
        return (self.options.cell_backbone, self.options.nucleus_backbone)

    def pretrained_parts(self) -> dict[str, str]:
        """``cell_weights`` and ``nucleus_weights``: the two branches.

        Returns:
            Each branch's weights argument with its backbone.
        """
        cell, nucleus = self.names
        return {"cell_weights": cell, "nucleus_weights": nucleus}

    def configure_models(self) -> None:
        """Build :attr:`net`, a :class:`~leukemia_wbc.models.dual_branch.DualBranchNet`."""
        self.net = DualBranchNet(self.num_classes, self.options)
        if self.freeze_at_start is not None:
            self.net.freeze(self.freeze_at_start)

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits of the image, its nucleus crops (and features): ``forward(...)``."""
        crops = self.nucleus_crops(batch)
        self._last_fallbacks = int(crops.empty.sum())
        self.nucleus_fallbacks += self._last_fallbacks
        return self.forward(batch["image"], crops.crops, *self.extra_inputs(batch))

    def extra_inputs(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        """The batch's handcrafted ``features`` for a task with a feature branch, else none.

        Args:
            batch: The batch dict after the device stage.

        Returns:
            ``(features,)`` or ``()``.

        Raises:
            ValueError: The task reads features and the batch has none.
        """
        if self.cell_features is None:
            return ()
        features = batch.get("features")
        if not isinstance(features, Tensor):
            raise ValueError(
                "the batch has no handcrafted 'features': prepare it with the task's "
                "prepare_batch before the device pipeline (TrainedModel does)"
            )
        return (features,)

    def prepare_batch(
        self, batch: dict[str, Any], *, cache_by_path: bool = False
    ) -> dict[str, Any]:
        """The nucleus masks, then (with ``features``) each cell's handcrafted features.

        Args:
            batch: A batch dict with a uint8 ``image`` ``(B, 3, H, W)``.
            cache_by_path: Keep masks and features by path (training).

        Returns:
            The batch, with ``features`` ``(B, n)`` where the task reads them.
        """
        out = super().prepare_batch(batch, cache_by_path=cache_by_path)
        image = out.get("image")
        if self.cell_features is None or not isinstance(image, Tensor):
            return out
        if image.dtype != torch.uint8 or "features" in out:
            return out
        return {**out, "features": self.cell_features.measure(out, cache_by_path=cache_by_path)}

    def on_fit_start(self) -> None:
        """Fit the feature branch's standardisation on the training cells, once (see above)."""
        super().on_fit_start()
        branch = self.net.feature_branch
        if self.cell_features is None or branch is None or bool(branch.fitted):
            return
        self.cell_features.clear()  # another run: other files or another physical scale
        branch.fit(training_features(self, self.trainer).to(branch.mean.device))

    def branches(self) -> dict[str, TaskBranch]:
        """The cell backbone on the image and the nucleus backbone on the nucleus crops.

        Returns:
            ``{"cell": ..., "nucleus": ...}``, in the order :meth:`forward` takes them.
        """
        return {
            "cell": TaskBranch(self.net.cell_branch, "image", self.options.cell_backbone),
            "nucleus": TaskBranch(
                self.net.nucleus_branch, "nucleus", self.options.nucleus_backbone
            ),
        }

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """The classifiers' step, and ``<stage>_nucleus_fallback``: cells without a nucleus.

        Args:
            batch: The batch dict after the device stage.
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss.
        """
        loss = super().shared_step(batch, stage)
        self.log(f"{stage}_nucleus_fallback", float(self._last_fallbacks), reduce_fx="sum",
                 on_step=False, on_epoch=True, batch_size=len(batch["label"]),
                 sync_dist=True)  # fmt: skip
        return loss
