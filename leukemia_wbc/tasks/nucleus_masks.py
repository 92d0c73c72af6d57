"""Where a classifier's nucleus masks come from: the batch, or a segmenter held with the task."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..models.nucleus_crop import NucleusCrops, crop_nucleus
from .mask_cache import MaskCache

__all__ = ["NUCLEUS_SOURCE_KEY", "MaskSource", "NucleusMaskMixin"]

#: Where a task's nucleus masks come from (see :class:`NucleusMaskMixin`).
MaskSource = Literal["batch", "segmenter"]
#: Batch key marking a ``mask`` that a task's segmenter added before the device pipeline.
NUCLEUS_SOURCE_KEY = "nucleus_source"


class NucleusMaskMixin(pl.LightningModule):
    """Nucleus masks and crops of a classifier's batches, from the batch or a segmenter.

    The segmenter (:attr:`segmenter`) is held outside the submodules: it is never trained with
    the task, and a checkpoint records it under its own key. A task that reads nucleus masks
    (:attr:`needs_nucleus`) gets the segmenter's masks added to each uint8 batch before the
    device pipeline (:meth:`add_nucleus_masks`), so that they follow the augmentation like a
    dataset's masks.

    The class using it sets :attr:`mask_source` and the ``mean`` / ``std`` buffers (the data's
    normalisation, to give the segmenter images in ``[0, 1]``) before any batch comes.
    """

    #: Whether the network reads a nucleus mask (from the batch, or from :attr:`segmenter`).
    needs_nucleus: bool = False
    #: Side of the crops of :meth:`nucleus_crops`.
    nucleus_size: int = 128
    #: ``"batch"``: the batch's ``mask`` when it has one; ``"segmenter"``: always the
    #: segmenter's.
    mask_source: MaskSource = "batch"
    mean: Tensor
    std: Tensor

    @property
    def segmenter(self) -> nn.Module | None:
        """The nucleus segmenter for batches without masks (held outside the submodules)."""
        held: nn.Module | None = self.__dict__.get("_segmenter")
        return held

    @segmenter.setter
    def segmenter(self, module: nn.Module | None) -> None:
        if module is not None:
            module.requires_grad_(False)
        self.__dict__["_segmenter"] = module  # not registered: never trained with us
        self.__dict__["_mask_cache"] = MaskCache()  # a new segmenter: no mask is known

    @property
    def mask_cache(self) -> MaskCache | None:
        """The segmenter's masks kept by sample path while training (``None``: none kept).

        Memory only until :class:`~leukemia_wbc.tasks.SegmentOnce` attaches a folder (the
        cross-validator and ``leukemia-wbc fit`` do). A new segmenter gets an empty cache.
        """
        held: MaskCache | None = self.__dict__.get("_mask_cache")
        return held

    @mask_cache.setter
    def mask_cache(self, cache: MaskCache | None) -> None:
        self.__dict__["_mask_cache"] = cache

    def __setattr__(self, name: str, value: Any) -> None:
        """Route ``segmenter`` and ``mask_cache`` through their properties (not registered)."""
        if name in ("segmenter", "mask_cache"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def check_nucleus_source(self, dataset: Any, source: str, where: str) -> None:
        """Check that a dataset's cells will have nucleus masks, at a size the segmenter takes.

        Args:
            dataset: The dataset (``has_masks`` and ``size`` are read when present).
            source: How the dataset is named in messages.
            where: How the task's arguments are named (``"model.init_args"``...).

        Raises:
            ValueError: ``mask_source="segmenter"`` without a segmenter; no masks in the data
                and no segmenter; a segmentation network of another input size.
        """
        segmenter = self.segmenter
        if segmenter is None and self.mask_source == "segmenter":
            raise ValueError(
                f"{where}.mask_source: 'segmenter' needs a segmenter and {type(self).__name__} "
                f"has none; set {where}.segmenter to a classical method (e.g. kmeans) or a "
                "trained SegmentationModule checkpoint, or use mask_source 'batch' on data with "
                "nucleus masks"
            )
        if segmenter is None and not getattr(dataset, "has_masks", False):
            raise ValueError(
                f"{where}.segmenter: {source} has no nucleus masks and {type(self).__name__} has "
                "no segmenter; set segmenter to a classical method (e.g. kmeans) or a trained "
                "SegmentationModule checkpoint (unet.ckpt)"
            )
        size = getattr(dataset, "size", None)
        check = getattr(segmenter, "check_input", None)
        if size is not None and callable(check):
            check((int(size[0]), int(size[1])), 3, where=f"{where}.segmenter")

    def segment(self, image: Tensor) -> Tensor:
        """Nucleus masks of a normalised batch from :attr:`segmenter`.

        The images are de-normalised with this task's statistics first. Prefer
        :meth:`add_nucleus_masks`, which segments the images before the device pipeline: stain
        normalisation, equalisation and background removal change what a segmenter sees (on
        segmentation_WBC's Dataset 2 the paper's three steps took a U-Net's Dice from 0.90 to
        0.19, and k-means' from 0.97 to 0.01).

        Args:
            image: ``(B, 3, H, W)`` normalised float images.

        Returns:
            ``(B, 1, H, W)`` masks.

        Raises:
            ValueError: There is no segmenter.
        """
        if self.segmenter is None:
            raise ValueError(
                f"the batch has no nucleus 'mask' and {type(self).__name__} has no segmenter: "
                "use a dataset with nucleus masks or set segmenter (e.g. 'kmeans' or a trained "
                "SegmentationModule checkpoint)"
            )
        return self._run_segmenter((image * self.std + self.mean).clamp(0.0, 1.0), image)

    def _run_segmenter(self, unit: Tensor, normalised: Tensor | None = None) -> Tensor:
        """Masks of ``[0, 1]`` images (``normalised``: the same images in the model's input)."""
        segmenter = self.segmenter
        assert segmenter is not None
        x = unit
        if getattr(segmenter, "input_range", "normalized") != "unit":
            x = normalised if normalised is not None else (unit - self.mean) / self.std
        was_training = segmenter.training
        segmenter.to(unit.device).eval()
        try:
            with torch.no_grad():
                predict = getattr(segmenter, "predict_masks", None)
                masks: Tensor = predict(x) if callable(predict) else segmenter(x)
        finally:
            segmenter.train(was_training)
        return masks

    def add_nucleus_masks(
        self, batch: dict[str, Any], *, cache_by_path: bool = False
    ) -> dict[str, Any]:
        """Segment a uint8 batch before the device pipeline, where this task needs it.

        For a task that uses the nucleus (``needs_nucleus``) and has a segmenter, the batch
        gets the segmenter's ``mask`` when it has none, or always with
        ``mask_source="segmenter"``; the mask then follows the augmentation's geometry like a
        dataset's mask, and the batch is marked (``NUCLEUS_SOURCE_KEY``) so that
        :meth:`nucleus_masks` uses it. The segmenter sees the images as decoded, before stain
        normalisation, equalisation and background removal (see :meth:`segment`). Called by
        :meth:`transfer_batch_to_device` in training and by
        :class:`~leukemia_wbc.inference.TrainedModel` at inference.

        Args:
            batch: A batch dict with a uint8 ``image`` ``(B, 3, H, W)``.
            cache_by_path: Keep each sample's mask by its ``path`` and reuse it (training:
                one path is always the same decoded image, so each cell is segmented once,
                not once per epoch). Off at inference, where a path's image may be perturbed.

        Returns:
            The batch, with the segmenter's ``mask`` where needed (a new dict), else unchanged.
        """
        image = batch.get("image")
        if not self.needs_nucleus or self.segmenter is None or not isinstance(image, Tensor):
            return batch
        if image.dtype != torch.uint8 or image.dim() != 4:  # already through the pipeline
            return batch
        if isinstance(batch.get("mask"), Tensor) and self.mask_source == "batch":
            return batch
        out = dict(batch)
        paths = batch.get("path")
        cache = self.mask_cache if cache_by_path else None
        if cache is not None and isinstance(paths, list) and len(paths) == image.shape[0]:
            out["mask"] = cache.masks([str(p) for p in paths], image, self._segment_uint8)
        else:
            out["mask"] = self._segment_uint8(image)
        out[NUCLEUS_SOURCE_KEY] = "segmenter"
        return out

    def prepare_batch(
        self, batch: dict[str, Any], *, cache_by_path: bool = False
    ) -> dict[str, Any]:
        """What the task adds to a uint8 batch before the device pipeline.

        Every route to the network calls it: training (:meth:`transfer_batch_to_device`),
        :class:`~leukemia_wbc.inference.TrainedModel`, the robustness suite and the smear
        analyzer. The default adds the segmenter's nucleus masks (:meth:`add_nucleus_masks`);
        a task with more inputs (the dual branch's handcrafted features) adds them too.

        Args:
            batch: A batch dict with a uint8 ``image`` ``(B, 3, H, W)``.
            cache_by_path: Keep what is computed per sample by its ``path`` (training).

        Returns:
            The batch, completed.
        """
        return self.add_nucleus_masks(batch, cache_by_path=cache_by_path)

    def _segment_uint8(self, image: Tensor) -> Tensor:
        """uint8 masks ``(B, 1, H, W)`` of uint8 images ``(B, 3, H, W)``."""
        return self._run_segmenter(image.float().div(255.0)).to(torch.uint8)

    def nucleus_masks(self, batch: dict[str, Any]) -> Tensor:
        """The batch's ``mask``, or the segmenter's (no mask, or ``mask_source="segmenter"``).

        A mask that :meth:`add_nucleus_masks` put in the batch is used as it is; otherwise the
        segmenter runs on the normalised images (see :meth:`segment`).

        Args:
            batch: The batch dict after the device stage.

        Returns:
            ``(B, 1, H, W)`` nucleus masks.
        """
        mask = batch.get("mask")
        ours = batch.get(NUCLEUS_SOURCE_KEY) == "segmenter"
        if isinstance(mask, Tensor) and (self.mask_source == "batch" or ours):
            return mask
        return self.segment(batch["image"])

    def nucleus_crops(self, batch: dict[str, Any]) -> NucleusCrops:
        """Each cell's nucleus cut from ``batch["image"]`` at :attr:`nucleus_size`.

        The nucleus's bounding box by :meth:`nucleus_masks`, zero outside the mask (see
        :func:`~leukemia_wbc.models.crop_nucleus`); a cell without nucleus pixels gives its
        whole image (``empty``).

        Args:
            batch: The batch dict after the device stage.

        Returns:
            The crops, their boxes in the image and the empty flags.
        """
        return crop_nucleus(batch["image"], self.nucleus_masks(batch), self.nucleus_size)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Move the batch (Lightning hook), then complete it (:meth:`prepare_batch`).

        Args:
            batch: The collated batch.
            device: The target device.
            dataloader_idx: Index of the loader.

        Returns:
            The batch on ``device`` (see :meth:`prepare_batch`).
        """
        moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if not isinstance(moved, dict):
            return moved
        return self.prepare_batch(moved, cache_by_path=True)
