"""Leakage-free splits: stratified (group) k-fold and hold-out, deterministic from a seed.

When a dataset has groups (patients, subjects, smears) shared by several samples, every split
here keeps each group on one side: C-NMC, for example, has dozens of cells per subject, and a
cell-level split would put the same subject in training and test. Grouping is automatic: it is
used whenever some group holds more than one sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

__all__ = [
    "Split",
    "assign_folds",
    "cv_split",
    "fold_split",
    "holdout_split",
    "is_grouped",
    "kfold_split",
]


@dataclass(frozen=True)
class Split:
    """Indices of the training, validation and test parts of one split.

    Attributes:
        train: Training sample indices (sorted).
        val: Validation sample indices (sorted).
        test: Test sample indices (sorted; may be empty).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def check(self, n: int | None, groups: Sequence[str] | None = None) -> None:
        """Assert that the parts are disjoint, cover ``range(n)`` and share no group.

        Args:
            n: Number of samples, or ``None`` to skip the coverage check.
            groups: Per-sample groups, or ``None`` to skip the group check.

        Raises:
            ValueError: Overlapping parts, missing samples or a group on two sides.
        """
        parts = {"train": self.train, "val": self.val, "test": self.test}
        all_idx = np.concatenate(list(parts.values()))
        if len(all_idx) != len(np.unique(all_idx)):
            raise ValueError("split parts overlap")
        if n is not None and (
            len(all_idx) != n or (n and (all_idx.min() < 0 or all_idx.max() >= n))
        ):
            raise ValueError(f"split covers {len(all_idx)} indices; expected all {n}")
        if groups is None:
            return
        g = np.asarray(groups, dtype=object)
        seen: dict[str, str] = {}
        for name, idx in parts.items():
            for grp in set(g[idx].tolist()):
                if grp in seen:
                    raise ValueError(f"group {grp!r} is in both {seen[grp]} and {name}")
                seen[grp] = name


def is_grouped(groups: Sequence[str] | None) -> bool:
    """Whether grouping matters: some group holds more than one sample.

    Args:
        groups: Per-sample groups, or ``None``.

    Returns:
        ``True`` when at least two samples share a group.
    """
    return groups is not None and len(set(groups)) < len(groups)


def _check_inputs(labels: np.ndarray, groups: Sequence[str] | None, n_splits: int) -> None:
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if (labels < 0).any():
        raise ValueError("labels contain unlabelled samples (-1); drop them before splitting")
    if groups is not None and len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} labels; expected one per sample")
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    n_units = len(set(groups)) if groups is not None and is_grouped(groups) else len(labels)
    if n_units < n_splits:
        unit = "groups" if is_grouped(groups) else "samples"
        raise ValueError(f"{n_units} {unit} cannot fill n_splits={n_splits} folds")


def assign_folds(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | None = None,
    *,
    n_splits: int = 10,
    seed: int = 0,
    stratify: bool = True,
) -> np.ndarray:
    """Assign every sample to one of ``n_splits`` folds.

    Stratified k-fold when no group holds more than one sample; stratified group k-fold (each
    group wholly inside one fold, class proportions kept as close as the groups allow)
    otherwise.

    Args:
        labels: Per-sample class indices.
        groups: Per-sample groups, or ``None``.
        n_splits: Number of folds.
        seed: Shuffling seed; the same seed gives the same folds.
        stratify: Keep class proportions per fold (turn off for regression-like targets).

    Returns:
        ``int64`` array of fold indices, one per sample.

    Raises:
        ValueError: Unlabelled samples, mismatched lengths or fewer groups than folds.
    """
    y = np.asarray(labels, dtype=np.int64)
    _check_inputs(y, groups, n_splits)
    fold = np.full(len(y), -1, dtype=np.int64)
    strat = y if stratify else np.zeros_like(y)
    dummy = np.zeros((len(y), 1))
    if is_grouped(groups):
        codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
        # scikit-learn refuses to stratify when every class is smaller than n_splits.
        if stratify and np.bincount(strat).max() < n_splits:
            strat = np.zeros_like(y)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(dummy, strat, codes)
    else:
        # A class with fewer members than folds only warns in scikit-learn; that is fine here.
        min_count = np.bincount(strat).min(initial=n_splits)
        if stratify and min_count < n_splits:
            strat = np.zeros_like(y)
        parts = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(
            dummy, strat
        )
    for k, (_, test_idx) in enumerate(parts):
        fold[test_idx] = k
    return fold


def cv_split(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | None = None,
    *,
    fold: int,
    n_splits: int = 10,
    seed: int = 0,
) -> Split:
    """The ``fold``-th split of a k-fold cross-validation.

    Fold ``fold`` is the test part, fold ``(fold + 1) % n_splits`` the validation part (for
    early stopping and checkpoint choice), the remaining folds train.

    Args:
        labels: Per-sample class indices.
        groups: Per-sample groups, or ``None``.
        fold: Which fold to hold out, ``0 <= fold < n_splits``.
        n_splits: Number of folds (at least 3, so that train, val and test are all non-empty).
        seed: Shuffling seed.

    Returns:
        The split.

    Raises:
        ValueError: ``fold`` out of range or ``n_splits`` below 3, and the cases of
            :func:`assign_folds`.
    """
    if n_splits < 3:
        raise ValueError(f"cv_split needs n_splits >= 3 (train, val, test), got {n_splits}")
    if not 0 <= fold < n_splits:
        raise ValueError(f"fold must lie in [0, {n_splits - 1}], got {fold}")
    return fold_split(assign_folds(labels, groups, n_splits=n_splits, seed=seed), fold)


def fold_split(folds: Sequence[int] | np.ndarray, fold: int) -> Split:
    """The split of fold ``fold`` from a fold assignment (see :func:`assign_folds`).

    Fold ``fold`` is the test part, fold ``(fold + 1) % n_splits`` the validation part and the
    other folds train, where ``n_splits = max(folds) + 1``.

    Args:
        folds: Per-sample fold indices.
        fold: Which fold to hold out.

    Returns:
        The split over positions of ``folds``.

    Raises:
        ValueError: Fewer than 3 folds, or ``fold`` out of range.
    """
    f = np.asarray(folds, dtype=np.int64)
    n_splits = int(f.max(initial=-1)) + 1
    if n_splits < 3:
        raise ValueError(f"a fold split needs at least 3 folds (train, val, test), got {n_splits}")
    if not 0 <= fold < n_splits:
        raise ValueError(f"fold must lie in [0, {n_splits - 1}], got {fold}")
    val_fold = (fold + 1) % n_splits
    return Split(
        train=np.flatnonzero((f != fold) & (f != val_fold)),
        val=np.flatnonzero(f == val_fold),
        test=np.flatnonzero(f == fold),
    )


def holdout_split(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | None = None,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """A stratified (and, with groups, grouped) train / validation / test hold-out split.

    The fractions are met as closely as whole groups allow: the samples are dealt into
    ``round(1 / min(fraction))`` stratified (group) folds, and whole folds make up each part.

    Args:
        labels: Per-sample class indices.
        groups: Per-sample groups, or ``None``.
        val_fraction: Share of samples for validation, in ``(0, 1)``.
        test_fraction: Share of samples for test, in ``[0, 1)``; 0 gives an empty test part.
        seed: Shuffling seed.

    Returns:
        The split.

    Raises:
        ValueError: Fractions out of range or summing to 1 or more.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError(
            f"val_fraction must lie in (0, 1) and test_fraction in [0, 1), got "
            f"{val_fraction} and {test_fraction}"
        )
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}"
        )
    smallest = min(f for f in (val_fraction, test_fraction) if f > 0)
    n_splits = max(3, round(1 / smallest))
    folds = assign_folds(labels, groups, n_splits=n_splits, seed=seed)
    n_val = max(1, round(val_fraction * n_splits))
    n_test = round(test_fraction * n_splits) if test_fraction > 0 else 0
    val_folds = np.arange(n_val)
    test_folds = np.arange(n_val, n_val + n_test)
    return Split(
        train=np.flatnonzero(~np.isin(folds, np.concatenate([val_folds, test_folds]))),
        val=np.flatnonzero(np.isin(folds, val_folds)),
        test=np.flatnonzero(np.isin(folds, test_folds)),
    )


def kfold_split(
    folds: Sequence[int] | np.ndarray,
    fold: int,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    groups: Sequence[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
) -> Split:
    """A cross-validation split from a fold assignment, with the validation part chosen either way.

    Fold ``fold`` is the test part. With ``val_fraction=None`` fold ``fold + 1`` validates and
    the rest trains (:func:`fold_split`); otherwise a share ``val_fraction`` of the other folds'
    samples validates, drawn by :func:`holdout_split` (stratified by ``labels``, whole
    ``groups``, seeded by ``seed + fold``). The second keeps more training data when there are
    few folds (with 3 folds the first trains on a third of the data).

    Args:
        folds: Per-sample fold indices (see :func:`assign_folds`).
        fold: The test fold.
        labels: Per-sample labels (needed with ``val_fraction``).
        groups: Per-sample groups, or ``None``.
        val_fraction: Share of the non-test samples that validates, or ``None``.
        seed: Seed of the validation draw.

    Returns:
        The split over positions of ``folds``.

    Raises:
        ValueError: ``val_fraction`` without ``labels``, or the cases of :func:`fold_split`
            and :func:`holdout_split`.
    """
    if val_fraction is None:
        return fold_split(folds, fold)
    if labels is None:
        raise ValueError("kfold_split with val_fraction needs the labels (to stratify)")
    f = np.asarray(folds, dtype=np.int64)
    fold_split(f, fold)  # range checks
    rest = np.flatnonzero(f != fold)
    y = np.asarray(labels, dtype=np.int64)
    g = None if groups is None else [groups[int(i)] for i in rest]
    units = len(set(g)) if g is not None and is_grouped(g) else len(rest)
    if units < 3:
        raise ValueError(
            f"the folds other than fold {fold} hold {units} groups; a validation part needs 3"
        )
    # With few groups the share asked for cannot be met: validate on one whole group.
    share = max(val_fraction, 1.0 / units)
    inner = holdout_split(y[rest], g, val_fraction=share, test_fraction=0.0, seed=seed + fold)
    return Split(train=rest[inner.train], val=rest[inner.val], test=np.flatnonzero(f == fold))
