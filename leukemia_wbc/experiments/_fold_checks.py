"""Checks of a fold assignment: enough groups and samples per fold, classes missing from one."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["check_fold_sizes", "warn_missing_classes"]


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
