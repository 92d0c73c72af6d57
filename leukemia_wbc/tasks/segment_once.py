"""``SegmentOnce``: a task's segmenter masks, computed in one first pass and kept on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from .mask_cache import MaskCache
from .nucleus_masks import NucleusMaskMixin

__all__ = ["SegmentOnce"]

_log = logging.getLogger(__name__)


class SegmentOnce(Callback):
    """Segment the training and validation cells once, before the first epoch, and keep the masks.

    A dual-branch or nucleus-only classifier trained on data without nucleus masks runs its
    frozen segmenter on its batches. With this callback, at the start of training, the cells of
    the training and validation parts that have no mask yet are decoded and segmented in one
    pass (with a progress bar), and every mask is written under ``directory``, in a subfolder
    named by the segmenter's fingerprint (its method and arguments, or a network's weights
    hash: see :func:`~leukemia_wbc.tasks.segmenter_fingerprint`), one file per image file and
    size. Later epochs, folds and runs read them: a changed segmenter, image size or image file
    has another name and is segmented afresh. Augmentation then moves each cached mask with its
    image, as it moves a dataset's masks.

    Nothing happens for a task that does not read nucleus masks, or takes them from a dataset
    that has them. A segmenter the library cannot describe (a user's own module), and samples
    that are not files (``SyntheticWBC``), keep their masks in memory for the run only.

    Args:
        directory: The cache folder; ``None``: ``mask_cache`` in the trainer's
            ``default_root_dir`` (beside the run).
        first_pass: Segment the missing masks before training (``False``: during the first
            epoch, as batches come).
        progress: Show the first pass's progress bar (also hidden when the trainer has none).

    Raises:
        ValueError: ``directory`` exists and is not a folder.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        first_pass: bool = True,
        progress: bool = True,
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"mask_cache: {self.directory} exists and is not a folder")
        self.first_pass = first_pass
        self.progress = progress

    def folder(self, trainer: pl.Trainer) -> Path:
        """The cache folder for a trainer (``directory``, or beside its run).

        Args:
            trainer: The trainer.

        Returns:
            The folder.
        """
        return self.directory or Path(trainer.default_root_dir) / "mask_cache"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Attach the disk cache to the task and segment what it lacks (Lightning hook).

        Args:
            trainer: The trainer.
            pl_module: The task.
        """
        data = getattr(trainer, "datamodule", None)
        dataset = getattr(data, "dataset", None)
        if not isinstance(pl_module, NucleusMaskMixin) or not pl_module.needs_nucleus:
            return
        if pl_module.segmenter is None:
            return
        if getattr(dataset, "has_masks", False) and pl_module.mask_source == "batch":
            return  # the dataset's masks are used
        if pl_module.mask_cache is None:
            pl_module.mask_cache = MaskCache()
        cache = pl_module.mask_cache
        assert cache is not None
        paths = getattr(dataset, "paths", None) or []
        on_disk = bool(paths) and os.path.isfile(paths[0])  # SyntheticWBC's are not files
        scale = getattr(dataset, "target_pixels_per_um", None)
        folder = (
            cache.attach(self.folder(trainer), pl_module.segmenter, pixels_per_um=scale)
            if on_disk
            else None
        )
        if on_disk and folder is None:
            _log.info(
                "mask cache: a segmenter of class %s has no fingerprint; its masks are kept in "
                "memory for this run only", type(pl_module.segmenter).__name__,
            )  # fmt: skip
        if self.first_pass:
            self._segment_missing(trainer, pl_module, cache)

    def _segment_missing(
        self, trainer: pl.Trainer, task: NucleusMaskMixin, cache: MaskCache
    ) -> None:
        """Segment the training and validation samples whose masks are not cached."""
        data: Any = getattr(trainer, "datamodule", None)
        split = getattr(data, "split", None)
        size = getattr(getattr(data, "dataset", None), "size", None)
        if split is None or size is None or not hasattr(data, "samples_loader"):
            return  # another data module: masks come as batches do
        indices = np.concatenate([np.asarray(split.train), np.asarray(split.val)])
        paths = data.dataset.paths
        if trainer.is_global_zero:
            todo = indices[cache.missing([paths[i] for i in indices], (size[0], size[1]))]
            if todo.size:
                self._run(trainer, task, data.samples_loader(todo), len(todo))
        trainer.strategy.barrier("leukemia_wbc_segment_once")

    def _run(self, trainer: pl.Trainer, task: NucleusMaskMixin, loader: Any, total: int) -> None:
        shown = self.progress and trainer.progress_bar_callback is not None
        name = getattr(task.segmenter, "method", type(task.segmenter).__name__)
        folder = None if task.mask_cache is None else task.mask_cache.folder
        where = "memory" if folder is None else str(folder)
        _log.info("segmenting %d cells once (%s), kept in %s", total, name, where)
        with tqdm(total=total, desc=f"Segmenting nuclei once ({name})", unit="cell",
                  disable=not shown, leave=False) as bar:  # fmt: skip
            for batch in loader:
                moved = task.transfer_batch_to_device(batch, task.device, 0)
                bar.update(int(moved["image"].shape[0]))
