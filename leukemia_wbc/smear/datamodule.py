"""``SmearDataModule``: whole smear fields for :class:`~leukemia_wbc.smear.DetectionModule`."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..data.datamodule import worker_init
from ..data.splits import Split, holdout_split
from .data import SyntheticSmear, detection_collate

__all__ = ["SmearDataModule"]


class SmearDataModule(pl.LightningDataModule):
    """Smear fields split into training and validation parts, batched for detection.

    The split is seeded and keeps each patient (the dataset's ``groups``) on one side, as
    every split of the library does (:func:`~leukemia_wbc.data.holdout_split`), so that the
    validation mAP is measured on stains the detector was not trained on. Batches are those of
    :func:`~leukemia_wbc.smear.detection_collate`: lists of uint8 images and of their targets,
    which :class:`~leukemia_wbc.smear.DetectionModule` takes as they are (its flips and scaling
    to ``[0, 1]`` run in the module, on the device).

    From the command line: ``leukemia-wbc fit --model DetectionModule --data SmearDataModule
    --data.dataset.n 200 --data.dataset.size 512``.

    Args:
        dataset: The fields (default: ``SyntheticSmear()``, 100 fields of 512x512).
        val_fraction: Share of the fields (whole patients) for validation, in ``(0, 1)``.
        batch_size: Fields per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: Seed of the split and of the training order.

    Raises:
        ValueError: A ``val_fraction`` outside ``(0, 1)``, a non-positive ``batch_size`` or a
            negative ``num_workers``.
    """

    def __init__(
        self,
        dataset: SyntheticSmear | None = None,
        *,
        val_fraction: float = 0.2,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        # no save_hyperparameters: the loggers merge them with the task's, whose ``seed`` (of
        # DetectionModule's flips) would clash with this one; LightningCLI records the config
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(
                f"argument 'val_fraction': expected a value in (0, 1), got {val_fraction}"
            )
        if batch_size < 1:
            raise ValueError(f"argument 'batch_size': expected at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"argument 'num_workers': expected 0 or more, got {num_workers}")
        #: The fields.
        self.dataset = dataset if dataset is not None else SyntheticSmear()
        self.val_fraction = float(val_fraction)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        #: The split (made by :meth:`setup`).
        self.split: Split | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        """The white-cell classes of the fields' labels."""
        return tuple(self.dataset.classes)

    def setup(self, stage: str | None = None) -> None:
        """Split the fields (once): whole patients to training or validation.

        Args:
            stage: Lightning stage (unused: one split serves all).

        Raises:
            ValueError: Too few patients (or fields) for the split.
        """
        if self.split is not None:
            return
        n = len(self.dataset)
        groups = list(getattr(self.dataset, "groups", [str(i) for i in range(n)]))
        try:
            split = holdout_split(
                np.zeros(n, dtype=np.int64), groups, val_fraction=self.val_fraction,
                test_fraction=0.0, seed=self.seed,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(
                f"SmearDataModule: {n} fields of {len(set(groups))} patients cannot be split "
                f"with val_fraction={self.val_fraction} ({err}); give more fields or patients "
                "(dataset n, n_patients) or a larger val_fraction"
            ) from None
        self.split = split

    def _loader(self, indices: np.ndarray, *, train: bool) -> DataLoader[Any]:
        return DataLoader(
            Subset(self.dataset, [int(i) for i in indices]),
            batch_size=self.batch_size,
            shuffle=train,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            num_workers=self.num_workers,
            collate_fn=detection_collate,
            worker_init_fn=worker_init,
            persistent_workers=self.num_workers > 0,
        )

    def _part(self, name: str) -> np.ndarray:
        self.setup()
        assert self.split is not None
        part: np.ndarray = getattr(self.split, name)
        return part

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training fields.

        Returns:
            The loader.
        """
        return self._loader(self._part("train"), train=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation fields, in order.

        Returns:
            The loader.
        """
        return self._loader(self._part("val"), train=False)
