"""Handcrafted nucleus features of uint8 batches, for a classifier that reads them as an input."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..models.feature_branch import FeatureSet, feature_names
from ..models.handcrafted import FEATURE_NAMES, nucleus_features

__all__ = ["CellFeatures", "training_features"]


class CellFeatures:
    """The handcrafted features of each cell of a batch, measured before the device pipeline.

    The features (:data:`~leukemia_wbc.models.FEATURE_NAMES`, or the subset of
    ``kind``) are measured on the image as decoded, with the batch's nucleus mask (the
    dataset's or the segmenter's) and whole-cell mask where there is one, exactly as
    :class:`~leukemia_wbc.models.HandcraftedSVM` measures them; a cell without nucleus pixels
    is measured as a whole. During training each cell's vector is kept by its path and size:
    one path is always the same decoded image, so each cell is measured once.

    Args:
        kind: ``"all"`` or ``"shape_texture"``.
    """

    def __init__(self, kind: FeatureSet) -> None:
        self.kind = kind
        self.names = feature_names(kind)
        self._columns = np.array([FEATURE_NAMES.index(n) for n in self.names])
        self._kept: dict[tuple[str, int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        """Forget the kept vectors (a new run: another scale or other files)."""
        self._kept.clear()

    def measure(self, batch: dict[str, Any], *, cache_by_path: bool = False) -> Tensor:
        """The features of a uint8 batch with nucleus masks.

        Args:
            batch: ``image`` uint8 ``(B, 3, H, W)``, ``mask`` ``(B, 1, H, W)``, and optional
                ``cell_mask`` and ``path``.
            cache_by_path: Keep and reuse each cell's vector by its path (training).

        Returns:
            ``(B, n)`` float32 features on the image's device.

        Raises:
            ValueError: The batch has no nucleus mask.
        """
        image: Tensor = batch["image"]
        mask = batch.get("mask")
        if not isinstance(mask, Tensor):
            raise ValueError(
                "handcrafted features measure the nucleus: the batch needs a nucleus 'mask' "
                "(a dataset with masks, or a segmenter)"
            )
        cell = batch.get("cell_mask")
        given = batch.get("path")
        paths: list[Any] = given if isinstance(given, list) else []
        h, w = int(image.shape[2]), int(image.shape[3])
        named = len(paths) == image.shape[0]
        images = image.detach().cpu().numpy()
        masks = mask.detach().cpu().numpy()
        cells = cell.detach().cpu().numpy() if isinstance(cell, Tensor) else None
        rows = []
        for i in range(image.shape[0]):
            name = str(paths[i]) if named else f"sample {i} of the batch"
            key = (name, h, w)
            found = self._kept.get(key) if cache_by_path and named else None
            if found is None:
                nucleus, whole = masks[i, 0], None if cells is None else cells[i, 0]
                if not nucleus.any():  # no nucleus found: the cell is measured as a whole
                    nucleus, whole = np.ones_like(nucleus), None
                found = nucleus_features(images[i], nucleus, whole, name=name)[self._columns]
                if cache_by_path and named:
                    self._kept[key] = found
            rows.append(found)
        return torch.from_numpy(np.stack(rows).astype(np.float32)).to(image.device)


def training_features(task: pl.LightningModule, trainer: pl.Trainer) -> Tensor:
    """The features of the training cells of the trainer's data, measured in one first pass.

    The batches take the task's own route (:meth:`transfer_batch_to_device`, so its masks
    and features are kept by path for the epochs that follow), with a progress bar.

    Args:
        task: A task whose prepared batches carry ``features``.
        trainer: Its trainer, with a ``WBCDataModule`` (its split set up).

    Returns:
        ``(N, n)`` features of the training cells, on the CPU.

    Raises:
        ValueError: The data is not a ``WBCDataModule``.
    """
    data: Any = getattr(trainer, "datamodule", None)
    split = getattr(data, "split", None)
    if split is None or not hasattr(data, "samples_loader"):
        raise ValueError(
            f"{type(task).__name__} with handcrafted features standardises them on its "
            "training cells first: train it with a WBCDataModule"
        )
    train = np.asarray(split.train)
    shown = trainer.progress_bar_callback is not None and trainer.is_global_zero
    rows = []
    with tqdm(total=len(train), desc="Measuring nucleus features", unit="cell",
              disable=not shown, leave=False) as bar:  # fmt: skip
        for batch in data.samples_loader(train):
            moved = task.transfer_batch_to_device(batch, task.device, 0)
            rows.append(moved["features"].cpu())
            bar.update(len(rows[-1]))
    return torch.cat(rows)
