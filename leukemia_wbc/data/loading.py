"""The DataModule's loaders: collation of sample dicts, worker set-up, balanced sampling.

Workers only decode and resize: a loader yields ``uint8`` batches (cheap to pin and move), and
every per-pixel transform runs later, batched on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler, default_collate

from .base import ImageReadError, Sample, WBCDataset
from .options import LoaderOptions

__all__ = [
    "FileSamples",
    "collate_file_samples",
    "collate_samples",
    "empty_mask_paths",
    "make_loader",
    "worker_init",
]

_STRING_KEYS = ("group", "path")
#: Keys that only some samples of one dataset may carry: a whole-cell mask comes from mask files
#: that encode the cytoplasm (ALL-IDB2's colour code, Zheng et al.'s grey levels) and not from
#: binary nucleus masks, which one folder may mix. A batch keeps such a key only when every
#: sample has it.
_OPTIONAL_KEYS = frozenset({"cell_mask"})


def collate_samples(samples: Sequence[Sample | None]) -> dict[str, Any]:
    """Collate sample dicts into the batch dict, dropping samples that failed to load.

    Tensors of one shape are stacked; ``group``, ``path`` and tensors whose shape differs
    between samples (such as ALL-IDB1 centroids) become lists. ``cell_mask`` is kept only when
    every sample has one (a folder may mix mask files with and without the cytoplasm). The
    number of dropped samples is reported as ``batch["skipped"]`` (an int tensor) so that the
    DataModule can count them across worker processes.

    Args:
        samples: Samples from :class:`WBCDataset`; ``None`` marks a skipped file.

    Returns:
        The batch dict (possibly with zero samples when every file failed).

    Raises:
        ValueError: The samples do not share the same keys (for example some with a mask and
            some without).
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if not kept:
        return {"skipped": torch.tensor(skipped)}
    keys = set(kept[0]) - _OPTIONAL_KEYS
    for s in kept[1:]:
        if set(s) - _OPTIONAL_KEYS != keys:
            raise ValueError(
                f"samples with different keys in one batch: {sorted(keys)} vs "
                f"{sorted(set(s) - _OPTIONAL_KEYS)} ({s.get('path')}); expected every sample to "
                "have the same fields (e.g. all with masks)"
            )
    keys |= {k for k in _OPTIONAL_KEYS if all(k in s for s in kept)}
    batch: dict[str, Any] = {}
    for key in (k for k in kept[0] if k in keys):
        values = [s[key] for s in kept]
        if key in _STRING_KEYS or not _stackable(values):
            batch[key] = values  # str fields and ragged tensors (e.g. ALL-IDB1 centroids)
        else:
            batch[key] = default_collate(values)
    batch["skipped"] = torch.tensor(skipped)
    return batch


def empty_mask_paths(batch: dict[str, Any]) -> list[str]:
    """Paths of a batch's samples whose nucleus ``mask`` has no nucleus pixel.

    Such a sample (an all-zero mask file) is kept like any other; where a model crops the
    nucleus, its crop falls back to the whole cell image
    (:func:`~leukemia_wbc.models.crop_nucleus`).

    Args:
        batch: A collated batch dict (``mask`` ``(B, 1, H, W)`` and ``path``, list of str).

    Returns:
        The paths, in batch order (empty when the batch has no mask or no paths).
    """
    mask, paths = batch.get("mask"), batch.get("path")
    if not isinstance(mask, Tensor) or mask.ndim != 4 or not isinstance(paths, list):
        return []
    empty = mask.flatten(1).ne(0).any(dim=1).logical_not().tolist()  # uint8 .any() is uint8
    return [str(p) for p, e in zip(paths, empty, strict=False) if e]


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one BLAS / OpenMP thread per worker process.

    Each worker is one process on one core; letting numpy's BLAS start its own thread pool in
    every worker oversubscribes the cores (on 2 cores, SyntheticWBC rendering in 2 workers ran
    at a third of the speed).

    Args:
        worker_id: Index of the worker (unused).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _stackable(values: Sequence[Any]) -> bool:
    if not all(isinstance(v, Tensor) for v in values):
        return not any(isinstance(v, Tensor) for v in values)
    return len({tuple(v.shape) for v in values}) == 1


def make_loader(
    dataset: Dataset[Sample | None],
    indices: np.ndarray,
    *,
    batch_size: int,
    options: LoaderOptions,
    train: bool,
    labels: np.ndarray | None = None,
    num_classes: int = 0,
    seed: int = 0,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset[indices]`` that collates with :func:`collate_samples`.

    Training loaders shuffle, or with ``options.balanced_sampler`` draw samples with
    probability inverse to their class frequency (with replacement, seeded), and drop a last
    incomplete batch when there is more than one batch.

    Args:
        dataset: The samples.
        indices: Positions of ``dataset`` to load.
        batch_size: Samples per batch.
        options: Workers, balanced sampling and pinned memory.
        train: Whether this is the training loader.
        labels: Per-sample labels of ``dataset`` (needed for balanced sampling).
        num_classes: Number of classes (for balanced sampling).
        seed: Seed of the balanced sampler.

    Returns:
        The loader.

    Raises:
        ValueError: Balanced sampling for training without ``labels``.
    """
    sampler = None
    if train and options.balanced_sampler:
        if labels is None:
            raise ValueError("make_loader: balanced_sampler needs the labels of the dataset")
        part = labels[indices]
        per_class = np.bincount(part, minlength=num_classes).astype(float)
        sampler = WeightedRandomSampler(
            (1.0 / per_class[part]).tolist(),
            len(indices),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
    return DataLoader(
        Subset(dataset, indices.tolist()),
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=options.num_workers,
        collate_fn=collate_samples,
        worker_init_fn=worker_init,
        pin_memory=options.pin_memory and torch.cuda.is_available(),
        persistent_workers=options.num_workers > 0,
        drop_last=train and len(indices) > batch_size,
    )


class FileSamples(Dataset[Sample | tuple[str, str]]):
    """A dataset's samples, or ``(path, message)`` for a file it cannot read.

    The error travels as data, so that it reaches the main process whole from a worker (a
    worker's exception arrives as a traceback text). Batch it with
    :func:`collate_file_samples`.

    Args:
        dataset: The files, as a dataset.
    """

    def __init__(self, dataset: WBCDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample | tuple[str, str]:
        try:
            return self.dataset.load_sample(index)
        except ImageReadError as err:
            return (self.dataset.records[index].path, str(err))


def collate_file_samples(items: Sequence[Sample | tuple[str, str]]) -> dict[str, Any]:
    """The batch of the readable samples, with ``errors``: ``(path, message)`` of the others.

    Args:
        items: What :class:`FileSamples` gave.

    Returns:
        The batch dict (no ``skipped`` count), with ``errors``.
    """
    errors = [item for item in items if isinstance(item, tuple)]
    samples = [item for item in items if not isinstance(item, tuple)]
    batch = collate_samples(samples) if samples else {}
    batch.pop("skipped", None)
    batch["errors"] = errors
    return batch
