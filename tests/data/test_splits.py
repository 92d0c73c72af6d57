from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leukemia_wbc.data.splits import Split, assign_folds, cv_split, holdout_split, is_grouped


def _grouped_data(n_groups: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        k = int(rng.integers(3, 30))  # patients with very different cell counts, as in C-NMC
        cls = g % 2  # every patient has one diagnosis
        labels += [cls] * k
        groups += [f"p{g}"] * k
    return np.array(labels), groups


def test_grouped_folds_never_share_a_group():
    labels, groups = _grouped_data()
    folds = assign_folds(labels, groups, n_splits=5, seed=1)
    g = np.array(groups)
    for name in set(groups):
        assert len(set(folds[g == name])) == 1
    # each fold's class balance stays near the whole set's
    overall = labels.mean()
    for k in range(5):
        assert abs(labels[folds == k].mean() - overall) < 0.2


def test_ungrouped_stratified_proportions():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    folds = assign_folds(labels, None, n_splits=10, seed=0)
    for k in range(10):
        assert np.bincount(labels[folds == k], minlength=3).tolist() == [7, 2, 1]


def test_same_seed_same_folds_other_seed_other_folds():
    labels, groups = _grouped_data()
    a = assign_folds(labels, groups, n_splits=5, seed=3)
    assert np.array_equal(a, assign_folds(labels, groups, n_splits=5, seed=3))
    assert not np.array_equal(a, assign_folds(labels, groups, n_splits=5, seed=4))


def test_cv_split_parts():
    labels, groups = _grouped_data()
    seen_test = []
    for fold in range(5):
        s = cv_split(labels, groups, fold=fold, n_splits=5, seed=0)
        s.check(len(labels), groups)
        seen_test.append(s.test)
    # every sample is tested exactly once across the folds
    assert np.array_equal(np.sort(np.concatenate(seen_test)), np.arange(len(labels)))


def test_holdout_fractions_and_groups():
    labels, groups = _grouped_data(80)
    s = holdout_split(labels, groups, val_fraction=0.2, test_fraction=0.2, seed=0)
    s.check(len(labels), groups)
    n = len(labels)
    assert 0.1 < len(s.val) / n < 0.3 and 0.1 < len(s.test) / n < 0.3
    no_test = holdout_split(labels, groups, val_fraction=0.25, test_fraction=0.0)
    assert no_test.test.size == 0 and no_test.val.size > 0


def test_check_detects_leak():
    leak = Split(train=np.array([0, 1]), val=np.array([2]), test=np.array([3]))
    with pytest.raises(ValueError, match="group 'a' is in both train and val"):
        leak.check(4, ["a", "b", "a", "c"])
    with pytest.raises(ValueError, match="overlap"):
        Split(np.array([0, 1]), np.array([1]), np.array([], dtype=int)).check(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 1, -1, 1]}, "unlabelled"),
        ({"n_splits": 1}, "n_splits"),
        ({"labels": [0, 1], "groups": ["a"]}, "1 groups for 2 labels"),
        (
            {"labels": [0, 1, 0, 1], "groups": ["a", "a", "b", "b"], "n_splits": 3},
            "2 groups cannot",
        ),
    ],
)
def test_bad_inputs(kwargs, message):
    args = {"labels": [0, 1, 0, 1, 0, 1], "groups": None, "n_splits": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        assign_folds(args.pop("labels"), args.pop("groups"), **args)


def test_is_grouped():
    assert is_grouped(["a", "a", "b"]) and not is_grouped(["a", "b"]) and not is_grouped(None)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=6, max_size=25),
    n_classes=st.integers(2, 4),
    n_splits=st.integers(3, 6),
    seed=st.integers(0, 10_000),
)
def test_property_no_group_crosses(sizes, n_classes, n_splits, seed):
    labels = np.concatenate([[i % n_classes] * s for i, s in enumerate(sizes)])
    groups = [f"g{i}" for i, s in enumerate(sizes) for _ in range(s)]
    if len(set(groups)) < n_splits:
        return
    for fold in range(n_splits):
        cv_split(labels, groups, fold=fold, n_splits=n_splits, seed=seed).check(len(labels), groups)


def test_kfold_split_validation_from_the_other_folds() -> None:
    from leukemia_wbc.data.splits import fold_split, kfold_split

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    groups = [f"p{i // 5}" for i in range(300)]  # 60 patients of 5 cells
    folds = assign_folds(labels, groups, n_splits=3, seed=1)
    for k in range(3):
        split = kfold_split(folds, k, labels=labels, groups=groups, val_fraction=0.2, seed=1)
        split.check(300, groups)
        assert (folds[split.test] == k).all() and (folds[split.train] != k).all()
        assert 0.15 < len(split.val) / (len(split.train) + len(split.val)) < 0.25
        assert set(labels[split.val].tolist()) == {0, 1, 2}
        again = kfold_split(folds, k, labels=labels, groups=groups, val_fraction=0.2, seed=1)
        assert np.array_equal(again.val, split.val)
        plain = kfold_split(folds, k)
        assert np.array_equal(plain.val, fold_split(folds, k).val)
    with pytest.raises(ValueError, match="needs the labels"):
        kfold_split(folds, 0, val_fraction=0.2)
