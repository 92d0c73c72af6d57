"""``PretrainModule``: self-supervised pretraining of a timm backbone on unlabelled cells."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from .._io import atomic_write_bytes
from ..data.options import IMAGENET_MEAN, IMAGENET_STD
from ..models.backbones import Weights, create_backbone, feature_dim
from ..transforms.pipeline import ColourMode, DevicePipeline, colour_input
from ..transforms.views import CellViews
from .base import BaseTask, Stage
from .optim import OptimConfig

__all__ = ["PretrainMethod", "PretrainModule", "lightly_parts"]

#: The self-supervised objectives: SimCLR (contrastive, NT-Xent over the batch) and BYOL
#: (an online network predicts a momentum copy's projection; no negatives).
PretrainMethod = Literal["simclr", "byol"]


def lightly_parts() -> Any:
    """The ``lightly`` modules the objectives are built from, or a clear error.

    Returns:
        A namespace with ``loss`` (``lightly.loss``), ``heads`` (``lightly.models.modules``) and
        ``utils`` (``lightly.models.utils``).

    Raises:
        ImportError: ``lightly`` is not installed (it is a dependency of the package; a broken
            environment may lack it).
    """
    try:
        import lightly.loss as loss
        import lightly.models.modules as heads
        import lightly.models.utils as utils
    except ImportError as err:  # pragma: no cover - lightly is a dependency
        raise ImportError(
            f"self-supervised pretraining needs the 'lightly' package ({err}); install it with "
            "pip install 'lightly>=1.5'"
        ) from err
    from types import SimpleNamespace

    return SimpleNamespace(loss=loss, heads=heads, utils=utils)


class _ColourMode(Callback):
    """During fit, the data's colour mode applies to each view, after the views.

    A DataModule's pipeline reduces the images to a ``"grayscale"`` or ``"hematoxylin"`` colour
    mode before the batch reaches the task, but the views' stain and colour perturbations need
    the colour. So, while a :class:`PretrainModule` fits, its pipeline keeps the colour and the
    module reduces each view instead, as the pipeline reduces augmented training images. The
    pipeline gets its mode back when the fit ends, also when it fails.
    """

    def __init__(self) -> None:
        self._given: tuple[DevicePipeline, PretrainModule] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pipeline = getattr(getattr(trainer, "datamodule", None), "pipeline", None)
        if isinstance(pl_module, PretrainModule) and isinstance(pipeline, DevicePipeline):
            pl_module.colour_mode, pipeline.colour = pipeline.colour, "rgb"
            self._given = (pipeline, pl_module)

    def _restore(self) -> None:
        given = self._given
        if given is not None:
            pipeline, module = given
            pipeline.colour, module.colour_mode = module.colour_mode, "rgb"
            self._given = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


class PretrainModule(BaseTask):
    """Self-supervised pretraining (SimCLR or BYOL, through ``lightly``) of a timm backbone.

    Each training batch (after the DataModule's device stage; labels, if any, are ignored) is
    turned back into images in ``[0, 1]``, and two random views of every cell are drawn on the
    device by :class:`~leukemia_wbc.transforms.CellViews` (crop, rotations and flips, a
    Macenko stain perturbation, colour jitter, grayscale, blur). The backbone learns features
    that agree between the two views of a cell, so features that do not change with the stain.

    - ``"simclr"``: Chen et al., ICML 2020; a projection head and the NT-Xent loss over the
      batch (the other cells are the negatives: use batches of 64 or more).
    - ``"byol"``: Grill et al., NeurIPS 2020; a projection and a prediction head, and a momentum
      copy of the backbone and projection as the target (works with small batches).

    The backbone's weights are the product: :meth:`export_backbone` writes them as a plain timm
    state dict, a valid ``weights=`` file for :class:`~leukemia_wbc.tasks.CellClassifier`,
    either branch of :class:`~leukemia_wbc.tasks.DualBranchClassifier`,
    :class:`~leukemia_wbc.tasks.NucleusClassifier` and a U-Net with the timm encoder
    ``"tu-<backbone>"`` (or the segmentation-models-pytorch encoder of the same name, e.g.
    ``"resnet34"``) when the architecture matches. A SimCLR checkpoint of this module is one too
    (its backbone is found under ``backbone.``).

    Args:
        backbone: Any timm model name.
        method: ``"simclr"`` or ``"byol"``.
        weights: Start from these weights (``None``: random; ``"imagenet"`` or a local file).
        projection_dim: Output size of the projection head.
        hidden_dim: Hidden size of the projection (and prediction) head.
        temperature: SimCLR's softmax temperature.
        momentum: BYOL's starting momentum of the target network (rises to 1 on a cosine).
        crop_scale: Range of the cropped share of a cell's area in a view.
        stain_jitter: Stain perturbation strength of a view (``stain`` of
            :class:`~leukemia_wbc.transforms.CellViews`).
        colour_jitter: Colour jitter strength of a view (``colour`` of ``CellViews``).
        optim: Optimiser and schedule; default AdamW at 1e-3 with a cosine schedule.
        **legacy: Deprecated flat optimiser settings (see :class:`BaseTask`).

    Raises:
        ValueError: An unknown ``method``, a non-positive size or temperature, a momentum
            outside ``[0, 1)``, or view settings out of range.
    """

    default_optim: ClassVar[OptimConfig] = OptimConfig(
        optimizer="adamw", scheduler="cosine", lr=1e-3, weight_decay=1e-4
    )
    #: Watched by the configs' checkpoint callback (there may be no validation part).
    monitor: str = "train_loss"
    #: The starting weights' file: a checkpoint holds the pretrained weights instead.
    weight_arguments: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        method: PretrainMethod = "simclr",
        weights: Weights = None,
        projection_dim: int = 128,
        hidden_dim: int = 512,
        temperature: float = 0.2,
        momentum: float = 0.99,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        stain_jitter: float = 0.4,
        colour_jitter: float = 0.4,
        optim: OptimConfig | None = None,
        **legacy: Any,
    ) -> None:
        if method not in ("simclr", "byol"):
            raise ValueError(f"argument 'method': expected 'simclr' or 'byol', got {method!r}")
        if projection_dim < 1 or hidden_dim < 1 or temperature <= 0:
            raise ValueError(
                "projection_dim and hidden_dim must be >= 1 and temperature > 0, got "
                f"{projection_dim}, {hidden_dim}, {temperature}"
            )
        if not 0 <= momentum < 1:
            raise ValueError(f"argument 'momentum': expected a value in [0, 1), got {momentum}")
        self.backbone_name = backbone
        self.method: PretrainMethod = method
        self.weights = None if weights is None else str(weights)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.view_strength = (float(stain_jitter), float(colour_jitter))
        # checks the view settings now rather than at the first batch
        CellViews((32, 32), crop_scale=self.crop_scale, stain=stain_jitter, colour=colour_jitter)
        # a plain dict, not a submodule: the views' random generators are no weights to save
        self._views: dict[tuple[int, int], CellViews] = {}
        #: What each view keeps of the colour: the data's colour mode while fitting.
        self.colour_mode: ColourMode = "rgb"
        super().__init__(optim=optim, **legacy)

    # -- hooks ---------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build :attr:`backbone`, the heads and (BYOL) the momentum target."""
        parts = lightly_parts()
        self.backbone: nn.Module = create_backbone(self.backbone_name, weights=self.weights)
        dim = feature_dim(self.backbone)
        if self.method == "simclr":
            self.projection: nn.Module = parts.heads.SimCLRProjectionHead(
                dim, self.hidden_dim, self.projection_dim
            )
            self.prediction: nn.Module | None = None
            return
        self.projection = parts.heads.BYOLProjectionHead(dim, self.hidden_dim, self.projection_dim)
        self.prediction = parts.heads.BYOLPredictionHead(
            self.projection_dim, self.hidden_dim, self.projection_dim
        )
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_projection = copy.deepcopy(self.projection)
        parts.utils.deactivate_requires_grad(self.momentum_backbone)
        parts.utils.deactivate_requires_grad(self.momentum_projection)

    def configure_losses(self) -> None:
        """NT-Xent (SimCLR) or the negative cosine similarity (BYOL), from ``lightly``."""
        loss = lightly_parts().loss
        self.criterion: nn.Module = (
            loss.NTXentLoss(temperature=self.temperature)
            if self.method == "simclr"
            else loss.NegativeCosineSimilarity()
        )

    # -- data ----------------------------------------------------------------------------------
    def _pipeline(self) -> Any:
        """The device pipeline of the DataModule being fitted, if any."""
        return getattr(getattr(self._trainer, "datamodule", None), "pipeline", None)

    def configure_callbacks(self) -> list[Callback]:
        """The callback that hands the data's colour mode to the views (see :class:`_ColourMode`).

        Returns:
            ``[_ColourMode()]``.
        """
        return [_ColourMode()]

    def _normalisation(self) -> tuple[Tensor, Tensor]:
        """The data's channel mean and std (``(1, 3, 1, 1)``), or ImageNet's without data."""
        pipeline = self._pipeline()
        mean = getattr(pipeline, "mean", None)
        std = getattr(pipeline, "std", None)
        if isinstance(mean, Tensor) and isinstance(std, Tensor):
            return mean.to(self.device), std.to(self.device)
        shape = (1, 3, 1, 1)
        return (torch.tensor(IMAGENET_MEAN, device=self.device).view(shape),
                torch.tensor(IMAGENET_STD, device=self.device).view(shape))  # fmt: skip

    def pixels(self, image: Tensor) -> Tensor:
        """The batch's images as float in ``[0, 1]`` (uint8 scaled; normalised ones restored).

        Args:
            image: ``(B, 3, H, W)`` uint8, or float after the DataModule's normalisation.

        Returns:
            ``(B, 3, H, W)`` float32 in ``[0, 1]``.
        """
        if image.dtype == torch.uint8:
            return image.float().div(255.0)
        mean, std = self._normalisation()
        return (image.float() * std + mean).clamp(0.0, 1.0)

    def views(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Two random, normalised views of each image.

        Args:
            pixels: ``(B, 3, H, W)`` float in ``[0, 1]``.

        Returns:
            The two view batches, reduced to the data's colour mode and normalised as the data
            is.
        """
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        views = self._views.get(size)
        if views is None:
            stain, colour = self.view_strength
            views = CellViews(size, crop_scale=self.crop_scale, stain=stain, colour=colour)
            self._views[size] = views
        mean, std = self._normalisation()
        with torch.autocast(pixels.device.type, enabled=False):
            first, second = (colour_input(views(pixels.float()), self.colour_mode)
                             for _ in range(2))  # fmt: skip
        return (first - mean) / std, (second - mean) / std

    # -- step ----------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """The backbone's pooled features of a normalised batch.

        Args:
            x: ``(B, 3, H, W)`` normalised images.

        Returns:
            ``(B, feature_dim)`` features.
        """
        out: Tensor = self.backbone(x)
        return out

    def _objective(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """The loss of two views, and the online projections of the first (for monitoring)."""
        z1 = self.projection(self.embed(first))
        z2 = self.projection(self.embed(second))
        if self.prediction is None:
            return self.criterion(z1.float(), z2.float()), z1
        p1, p2 = self.prediction(z1), self.prediction(z2)
        with torch.no_grad():
            t1 = self.momentum_projection(self.momentum_backbone(first))
            t2 = self.momentum_projection(self.momentum_backbone(second))
        loss = 0.5 * (
            self.criterion(p1.float(), t2.float()) + self.criterion(p2.float(), t1.float())
        )
        return loss, z1

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor | None:
        """The self-supervised loss of two views of each cell of ``batch``.

        Also logs ``<stage>_embedding_std``: the standard deviation of the L2-normalised
        projections over the batch, averaged over dimensions. About ``1/sqrt(projection_dim)``
        while the features differ between cells; near 0 when they collapse to one point.

        Args:
            batch: The batch dict after the device stage (``image``; other keys are ignored).
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss; ``None`` for an evaluation batch of one image (the last of a part whose
            size leaves one over), which has no second cell to contrast with.

        Raises:
            ValueError: A training batch of fewer than two images.
        """
        image = batch["image"]
        if image.shape[0] < 2:
            if stage != "train":
                return None
            raise ValueError(
                f"{type(self).__name__}: a batch of {image.shape[0]} image cannot be contrasted; "
                "use batches of 2 or more (drop_last, or a larger dataset)"
            )
        first, second = self.views(self.pixels(image))
        loss, z = self._objective(first, second)
        n = int(image.shape[0])
        self.log_loss(stage, loss, n)
        spread = F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
        self.log(f"{stage}_embedding_std", spread, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """BYOL: move the target towards the online network (momentum on a cosine to 1).

        Args:
            batch: The batch (unused).
            batch_idx: Its index (unused).
        """
        if self.method != "byol":
            return
        total = self.trainer.estimated_stepping_batches
        steps = int(total) if math.isfinite(total) and total > 0 else 1
        step = min(int(self.global_step), steps)
        m = 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * step / steps) + 1) / 2
        utils = lightly_parts().utils
        utils.update_momentum(self.backbone, self.momentum_backbone, m)
        utils.update_momentum(self.projection, self.momentum_projection, m)

    # -- the product ---------------------------------------------------------------------------
    def export_backbone(self, path: str | os.PathLike[str]) -> Path:
        """Write the backbone's weights as a plain state dict (a ``weights=`` file).

        The file is written atomically (``torch.save`` of CPU tensors only, read back with
        ``weights_only=True``).

        Args:
            path: The file to write (parent folders are created).

        Returns:
            The path written.
        """
        import io

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in self.backbone.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(target, buffer.getvalue())
        return target
