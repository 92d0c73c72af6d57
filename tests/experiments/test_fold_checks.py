"""Fold checks before any fold runs: classes too small for the folds (issue 18, BCCD)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from leukemia_wbc.data import ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.data.folder import BCCD_GROUP_PATTERN
from leukemia_wbc.data.splits import Split
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.experiments._fold_checks import check_fold_sizes, warn_small_classes
from leukemia_wbc.models import HandcraftedSVM

CLASSES = ("ALL", "AML", "CLL", "normal")
CALIBRATION_LOGGER = "leukemia_wbc.models._svm_calibration"


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _check(counts: list[int], n_splits: int) -> None:
    labels = _labels(counts)
    groups = [str(i) for i in range(len(labels))]
    check_fold_sizes(labels, groups, CLASSES, n_splits=n_splits, grouped=False, stratify=True)


def test_a_class_smaller_than_the_folds_is_named_with_its_count_and_what_to_do() -> None:
    with pytest.raises(ValueError) as err:
        _check([20, 20, 4, 20], n_splits=5)
    assert str(err.value) == (
        "n_splits=5 exceeds the 4 samples of class 'CLL': stratified folds need every class "
        "in every test fold; lower n_splits to 4 or fewer, add samples of that class, or drop "
        "that class (in an image folder, drop a class by moving its folder out)"
    )
    with pytest.raises(ValueError) as err:
        _check([20, 3, 2, 20], n_splits=4)
    assert str(err.value) == (
        "n_splits=4 exceeds the 2 samples of class 'CLL' and the 3 samples of class 'AML': "
        "stratified folds need every class in every test fold; no n_splits fits (3 is the "
        "least): add samples of those classes, drop those classes, or set stratify=False "
        "(some test folds then lack those classes) (in an image folder, drop a class by "
        "moving its folder out)"
    )
    with pytest.raises(ValueError, match=r"3 samples of class 'CLL'.*; lower n_splits to 3, add"):
        _check([20, 20, 3, 20], n_splits=4)
    _check([20, 20, 3, 20], n_splits=3)  # as many samples as folds: allowed
    _check([20, 20, 0, 20], n_splits=3)  # an absent class is no fold's concern here


def _split(train: np.ndarray, val: np.ndarray | None = None) -> Split:
    empty = np.zeros(0, dtype=np.int64)
    return Split(train=train, val=empty if val is None else val, test=empty)


def test_a_fold_training_on_too_few_samples_of_a_class_is_named() -> None:
    labels = _labels([10, 10, 10, 3])
    s = np.flatnonzero(labels == 3)
    rest = np.flatnonzero(labels != 3)
    splits = [_split(np.r_[rest, s[:2]]), _split(np.r_[rest, s[1:]]),
              _split(np.r_[rest, s[:1]], val=s[1:2])]  # fmt: skip
    with pytest.warns(UserWarning) as record:
        warn_small_classes(labels, splits, CLASSES, val_fraction=0.15)
    assert [str(w.message) for w in record] == [
        "class 'normal' has 3 labelled samples, too few for n_splits=3: the training parts of "
        "folds 0, 1, 2 hold fewer than 3 of them (training samples of the class per fold: "
        "2, 2, 1); there the model learns the class from 1 or 2 examples, and the figures of "
        "the class are unreliable. To avoid this, add samples of the class, drop it (in an "
        "image folder, move its folder out) or lower val_fraction (now 0.15) to leave more "
        "for training"
    ]
    labels = _labels([10, 10, 10, 5])
    s, rest = np.flatnonzero(labels == 3), np.flatnonzero(labels != 3)
    splits = [_split(np.r_[rest, s[:4]]), _split(rest), _split(np.r_[rest, s])]
    with pytest.warns(UserWarning) as record:
        warn_small_classes(labels, splits, CLASSES, val_fraction=0.15)
    assert [str(w.message) for w in record] == [
        "class 'normal' has 5 labelled samples, too few for n_splits=3: the training part of "
        "fold 1 holds fewer than 3 of them (training samples of the class per fold: 4, 0, 5); "
        "there the model never sees the class (and never predicts it), and the figures of the "
        "class are unreliable. To avoid this, add samples of the class, drop it (in an image "
        "folder, move its folder out) or raise n_splits (now 3) up to 5"
    ]


def test_enough_samples_warn_nothing(recwarn: pytest.WarningsRecorder) -> None:
    labels = _labels([10, 10, 10, 3])
    warn_small_classes(labels, [_split(np.arange(len(labels)))] * 3, CLASSES, val_fraction=0.15)
    assert not recwarn.list


def test_the_validator_warns_before_any_fold_and_the_svm_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = SyntheticWBC(60, size=32, seed=0, n_patients=60)
    normal = np.flatnonzero(full.labels == 3)
    ds = full.subset([i for i in range(60) if full.labels[i] != 3] + normal[:3].tolist())
    out = tmp_path / "svm"
    with pytest.warns(UserWarning, match=r"class 'normal' has 3 labelled samples, too few for "
                      r"n_splits=3: the training parts? of folds? .* fewer than 3"):  # fmt: skip
        cv = CrossValidator(HandcraftedSVM(progress=False), WBCDataModule(ds, size=32), out,
                            n_splits=3, accelerator="cpu")  # fmt: skip
    assert not out.exists()  # said before any fold ran
    with caplog.at_level("WARNING", logger=CALIBRATION_LOGGER):
        result = cv.run()
    assert "class 'normal' has" in caplog.text and "calibration off" in caplog.text
    assert len(result.folds) == 3
    np.testing.assert_allclose(result.predictions.probs.sum(axis=1), 1.0, atol=1e-9)
    assert np.isfinite(result.fold_metric("auroc_normal")).all()  # one normal per test fold
    assert set(result.per_class()) == set(CLASSES)


@pytest.mark.realdata
def test_real_bccd_basophils(shared_data: Path, tmp_path: Path) -> None:
    """BCCD's 3 basophils: the warning names them and the SVM fits the fold with 1 of them."""
    start = time.perf_counter()
    ds = ImageFolderWBC(shared_data / "BCCD_cropped", group_pattern=BCCD_GROUP_PATTERN)
    with pytest.warns(UserWarning, match=r"class 'Basophil' has 3 labelled samples, too few"):
        cv = CrossValidator(HandcraftedSVM(progress=False, segmenter="kmeans"),
                            WBCDataModule(ds, size=96), tmp_path, n_splits=3)  # fmt: skip
    basophil = ds.classes.index("Basophil")
    trained = [int((ds.labels[cv.split(k).train] == basophil).sum()) for k in range(3)]
    fold = int(np.argmin(trained))
    assert trained[fold] == 1
    result = cv.run(folds=[fold])
    (only,) = result.folds
    assert only.metrics["accuracy"] > 0.59  # above always answering Neutrophil (207 of 351)
    np.testing.assert_allclose(result.predictions.probs.sum(axis=1), 1.0, atol=1e-9)
    assert time.perf_counter() - start < 30
