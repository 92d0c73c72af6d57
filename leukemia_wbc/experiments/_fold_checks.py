"""Checks of folds: enough groups and samples per fold, classes missing, damaged fold files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._safe_load import refused_code, unreadable_reason
from ..data.splits import Split

__all__ = [
    "RESTARTED_DIR",
    "DamagedFoldError",
    "check_checkpoint",
    "check_fold_sizes",
    "damaged",
    "warn_missing_classes",
    "warn_small_classes",
]

#: Fewer training samples of a class than this in a fold's training part get a warning.
MIN_TRAIN_SAMPLES = 3

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
        f"{path} is damaged ({reason}): rerun with --restart_fold {fold} "
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
        reason = unreadable_reason(path, err)
        if not refused_code(err):
            reason = f"truncated or not a checkpoint: {reason}"
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
        order = np.argsort(counts, kind="stable")
        small = [(classes[c], int(counts[c])) for c in order if 0 < counts[c] < n_splits]
        if small:
            named = " and ".join(f"the {n} samples of class {name!r}" for name, n in small)
            them = "that class" if len(small) == 1 else "those classes"
            fewest = small[0][1]
            if fewest >= 3:
                fewer = "" if fewest == 3 else " or fewer"  # 3 is the least
                what = f"lower n_splits to {fewest}{fewer}, add samples of {them}, or drop {them}"
            else:
                what = (
                    f"no n_splits fits (3 is the least): add samples of {them}, drop {them}, "
                    f"or set stratify=False (some test folds then lack {them})"
                )
            raise ValueError(
                f"n_splits={n_splits} exceeds {named}: stratified folds need every class in "
                f"every test fold; {what} (in an image folder, drop a class by moving its "
                "folder out)"
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


def warn_small_classes(
    labels: np.ndarray,
    splits: Sequence[Split],
    classes: Sequence[str],
    *,
    val_fraction: float | None,
) -> None:
    """Warn, before any fold runs, about each class some fold's training part nearly lacks.

    A fold whose training part holds fewer than :data:`MIN_TRAIN_SAMPLES` samples of a class
    the dataset has learns that class from one or two examples, or none; the warning names
    the class, its count, the folds and what to do.

    Args:
        labels: Class of every dataset sample (-1 for unlabelled ones).
        splits: Each fold's split (dataset positions), in fold order.
        classes: Class names.
        val_fraction: The validator's ``val_fraction`` (named in the advice when the
            validation parts of those folds hold samples of the class).
    """
    totals = np.bincount(labels[labels >= 0], minlength=len(classes))
    per_fold = np.stack([np.bincount(labels[s.train], minlength=len(classes)) for s in splits])
    in_val = np.stack([np.bincount(labels[s.val], minlength=len(classes)) for s in splits])
    n_splits = len(splits)
    for c, name in enumerate(classes):
        low = np.flatnonzero(per_fold[:, c] < MIN_TRAIN_SAMPLES)
        if totals[c] == 0 or low.size == 0:
            continue
        seen = sorted(set(per_fold[low, c].tolist()))
        if seen == [0]:
            learns = "never sees the class (and never predicts it)"
        else:
            some = " or ".join(str(n) for n in seen if n)
            learns = (f"learns the class from {some} example{'s' if seen[-1] > 1 else ''}"
                      + (" or none" if seen[0] == 0 else ""))  # fmt: skip
        todo = ["add samples of the class", "drop it (in an image folder, move its folder out)"]
        if val_fraction is not None and in_val[low, c].any():
            todo.append(f"lower val_fraction (now {val_fraction}) to leave more for training")
        if totals[c] > n_splits:  # more folds, larger training parts
            todo.append(f"raise n_splits (now {n_splits}) up to {int(totals[c])}")
        many = low.size > 1
        where = (f"the training part{'s' if many else ''} of fold{'s' if many else ''} "
                 f"{', '.join(str(k) for k in low)} hold{'' if many else 's'}")  # fmt: skip
        warnings.warn(
            f"class {name!r} has {int(totals[c])} labelled samples, too few for "
            f"n_splits={n_splits}: {where} fewer than "
            f"{MIN_TRAIN_SAMPLES} of them (training samples of the class per fold: "
            f"{', '.join(str(int(n)) for n in per_fold[:, c])}); there the model {learns}, "
            f"and the figures of the class are unreliable. To avoid this, "
            f"{', '.join(todo[:-1])} or {todo[-1]}",
            stacklevel=3,
        )
