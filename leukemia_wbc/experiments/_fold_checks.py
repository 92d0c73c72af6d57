"""Checks of folds: enough groups and samples per fold, classes missing, damaged fold files."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "RESTARTED_DIR",
    "DamagedFoldError",
    "check_checkpoint",
    "check_fold_sizes",
    "damaged",
    "warn_missing_classes",
]

#: Where a restarted fold's files are moved, under the output folder (``fold_<k>-<time>/``).
RESTARTED_DIR = "restarted"


class DamagedFoldError(ValueError):
    """A file of a fold cannot be read (truncated, corrupt, or not what the library wrote)."""


def damaged(path: Path, fold: int, reason: str) -> DamagedFoldError:
    """The error of a damaged fold file: which file, why, and how to train the fold again.

    Args:
        path: The damaged file.
        fold: Its fold.
        reason: What is wrong with it.

    Returns:
        The error (to raise).
    """
    folder = next((p for p in path.parents if p.name == f"fold_{fold}"), path.parent)
    return DamagedFoldError(
        f"{path} is damaged ({reason}): rerun with --restart-fold {fold} "
        f"(CrossValidator.run(restart_folds=[{fold}])) to train fold {fold} from the start; "
        f"its current files are kept, moved to {folder.parent / RESTARTED_DIR}/fold_{fold}-<time>/"
    )


def check_checkpoint(path: Path, fold: int) -> None:
    """Refuse a training checkpoint that cannot be resumed from, before Lightning reads it.

    The file is read as Lightning will read it, with ``torch.load(..., weights_only=True)``.

    Args:
        path: The fold's ``checkpoints/last.ckpt``.
        fold: Its fold.

    Raises:
        DamagedFoldError: The file is truncated, not a checkpoint, or holds objects that are not
            plain values (tensors, numbers, strings, containers).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated zip, an empty or foreign file, a pickled object
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe is not None:
            reason = f"it names {unsafe[1]}, not a plain value: refused by weights_only=True"
        else:
            reason = f"truncated or not a checkpoint: {type(err).__name__}"
            if isinstance(err, RuntimeError):  # PyTorch's zip reader says what it missed
                reason += f": {str(err).split('.')[0][:100]}"
        raise damaged(path, fold, reason) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise damaged(path, fold, "not a Lightning training checkpoint: no state_dict")


def check_fold_sizes(
    labels: np.ndarray,
    groups: Sequence[str],
    classes: Sequence[str],
    *,
    n_splits: int,
    grouped: bool,
    stratify: bool,
) -> None:
    """Refuse a number of folds the groups or the smallest class cannot fill.

    Args:
        labels: Class of every labelled sample.
        groups: Group (patient) of every labelled sample.
        classes: Class names.
        n_splits: Number of folds.
        grouped: Whether groups are kept within folds.
        stratify: Whether every fold keeps the class proportions.

    Raises:
        ValueError: More folds than groups, or than samples of a class.
    """
    if grouped:
        n_groups = len(set(groups))
        if n_groups < n_splits:
            raise ValueError(
                f"n_splits={n_splits} exceeds the {n_groups} groups of the "
                "dataset: every fold needs a group of its own"
            )
    if stratify:
        counts = np.bincount(labels, minlength=len(classes))
        present = counts[counts > 0]
        smallest = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
        if present.min() < n_splits:
            raise ValueError(
                f"n_splits={n_splits} exceeds the {int(present.min())} samples of "
                f"class {classes[smallest]!r}: every fold needs at least one sample of each "
                "class; lower n_splits or drop the class"
            )


def warn_missing_classes(
    labels: np.ndarray, folds: np.ndarray, classes: Sequence[str], n_splits: int
) -> None:
    """Warn about each fold that holds no sample of a class the dataset has.

    Args:
        labels: Class of every dataset sample.
        folds: Fold of every dataset sample (-1 for unlabelled ones).
        classes: Class names.
        n_splits: Number of folds.
    """
    for k in range(n_splits):
        present = set(labels[folds == k].tolist())
        missing = [c for i, c in enumerate(classes) if i not in present and (labels == i).any()]
        if missing:
            warnings.warn(
                f"fold {k} holds no sample of {missing} (the groups do not spread over all "
                "folds): that fold's recall and AUC of those classes are undefined (NaN)",
                stacklevel=3,
            )
