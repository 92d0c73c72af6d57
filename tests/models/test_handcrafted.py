"""Tests of leukemia_wbc.models.handcrafted: nucleus features and the SVM baseline."""

from __future__ import annotations

import math
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from skimage.draw import disk, ellipse

from leukemia_wbc.data import SyntheticWBC
from leukemia_wbc.models import FEATURE_NAMES, HandcraftedSVM, nucleus_features

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _cell_image(size: int = 96) -> np.ndarray:
    """An (H, W, 3) image: light background, violet disc of radius 20, blue cytoplasm ring."""
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), (230, 220, 225), dtype=np.uint8)
    rr, cc = disk((size // 2, size // 2), 30, shape=(size, size))
    image[rr, cc] = (150, 160, 210)
    rr, cc = disk((size // 2, size // 2), 20, shape=(size, size))
    image[rr, cc] = np.array([90, 40, 130]) + rng.integers(-20, 20, size=(len(rr), 3))
    return image


def _disc(radius: int, size: int = 96) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    rr, cc = disk((size // 2, size // 2), radius, shape=(size, size))
    mask[rr, cc] = 1
    return mask


def test_feature_names_are_unique_and_complete() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 23
    for name in ("nucleus_area", "nucleus_circularity", "glcm_correlation", "cytoplasm_std_b"):
        assert name in F


def test_disc_shape_features() -> None:
    radius = 20
    features = nucleus_features(_cell_image(), _disc(radius), _disc(30))
    assert np.isfinite(features).all()
    assert features[F["nucleus_area"]] == pytest.approx(math.pi * radius**2, rel=0.03)
    assert features[F["nucleus_perimeter"]] == pytest.approx(2 * math.pi * radius, rel=0.05)
    assert features[F["nucleus_circularity"]] == pytest.approx(1.0, abs=0.05)
    assert features[F["nucleus_eccentricity"]] < 0.1
    assert features[F["nucleus_solidity"]] > 0.95
    assert features[F["nucleus_components"]] == 1
    assert features[F["nucleus_cell_ratio"]] == pytest.approx((20 / 30) ** 2, rel=0.05)
    # colours: the violet nucleus and the blue cytoplasm ring
    assert features[F["nucleus_mean_r"]] == pytest.approx(90 / 255, abs=0.02)
    assert features[F["cytoplasm_mean_b"]] == pytest.approx(210 / 255, abs=1e-6)
    assert features[F["cytoplasm_std_r"]] == pytest.approx(0.0, abs=1e-9)
    assert 0 < features[F["glcm_energy"]] <= 1 and 0 < features[F["glcm_homogeneity"]] <= 1


def test_ellipse_eccentricity() -> None:
    mask = np.zeros((96, 96), dtype=np.uint8)
    rr, cc = ellipse(48, 48, 12, 30, shape=mask.shape)  # semi-axes 12 (rows) and 30 (columns)
    mask[rr, cc] = 1
    features = nucleus_features(_cell_image(), mask)
    assert features[F["nucleus_eccentricity"]] == pytest.approx(
        math.sqrt(1 - (12 / 30) ** 2), abs=0.02
    )
    assert features[F["nucleus_area"]] == pytest.approx(math.pi * 12 * 30, rel=0.03)
    assert features[F["nucleus_circularity"]] < 0.9
    assert np.isfinite(features).all()


def test_layouts_and_types_agree() -> None:
    image, mask = _cell_image(), _disc(20)
    reference = nucleus_features(image, mask, _disc(30))
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    from_tensor = nucleus_features(
        tensor, torch.from_numpy(mask)[None], torch.from_numpy(_disc(30))
    )
    from_chw = nucleus_features(image.transpose(2, 0, 1), mask[None], _disc(30))
    np.testing.assert_allclose(from_tensor, reference)
    np.testing.assert_allclose(from_chw, reference)


def test_lobes_and_estimated_cell() -> None:
    mask = np.zeros((96, 96), dtype=np.uint8)
    for centre in ((30, 30), (30, 66), (66, 48)):
        rr, cc = disk(centre, 9, shape=mask.shape)
        mask[rr, cc] = 1
    features = nucleus_features(_cell_image(), mask)  # no cell mask: estimated from the image
    assert features[F["nucleus_components"]] == 3
    assert 0 < features[F["nucleus_cell_ratio"]] <= 1
    assert np.isfinite(features).all()


def test_degenerate_masks_stay_finite() -> None:
    image = _cell_image()
    one_pixel = np.zeros((96, 96), dtype=np.uint8)
    one_pixel[48, 48] = 1
    everything = np.ones((96, 96), dtype=np.uint8)
    flat = np.full((96, 96, 3), 128, dtype=np.uint8)
    for img, mask in ((image, one_pixel), (image, everything), (flat, _disc(20))):
        assert np.isfinite(nucleus_features(img, mask)).all()


def test_feature_errors() -> None:
    image = _cell_image()
    with pytest.raises(ValueError, match=r"cell_7: the nucleus mask is empty"):
        nucleus_features(image, np.zeros((96, 96)), name="cell_7")
    with pytest.raises(ValueError, match=r"nucleus mask must have the image's size \(96, 96\)"):
        nucleus_features(image, np.ones((64, 64)))
    with pytest.raises(ValueError, match=r"cell mask must have the image's size"):
        nucleus_features(image, _disc(20), np.ones((1, 96, 95)))
    with pytest.raises(ValueError, match=r"RGB uint8"):
        nucleus_features(image.astype(np.float32), _disc(20))
    with pytest.raises(ValueError, match=r"RGB uint8"):
        nucleus_features(image[..., 0], _disc(20))


@pytest.fixture(scope="module")
def synthetic() -> tuple[SyntheticWBC, SyntheticWBC]:
    """160 training and 200 held-out images from other synthetic patients (seed)."""
    return SyntheticWBC(160, size=64, seed=0), SyntheticWBC(200, size=64, seed=1)


def test_svm_on_synthetic(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, test = synthetic
    svm = HandcraftedSVM(progress=False).fit_dataset(train)
    np.testing.assert_array_equal(svm.classes_, [0, 1, 2, 3])
    proba = svm.predict_proba_dataset(test)
    assert proba.shape == (200, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    accuracy = (proba.argmax(axis=1) == test.labels).mean()
    # Measured 0.785 (chance 0.25; see the report in the issue); the floor leaves a margin.
    assert accuracy >= 0.55, accuracy


def test_array_interface_matches_dataset(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, _ = synthetic
    indices = list(range(0, 160, 2))
    samples = [train[i] for i in indices]
    images = [s["image"] for s in samples]
    masks = [s["mask"] for s in samples]
    cells = [s["cell_mask"] for s in samples]
    labels = train.labels[indices]
    by_arrays = HandcraftedSVM(progress=False).fit(images, masks, labels, cell_masks=cells)
    by_dataset = HandcraftedSVM(progress=False).fit_dataset(train, indices)
    np.testing.assert_allclose(
        by_arrays.predict_proba(images[:10], masks[:10], cells[:10]),
        by_dataset.predict_proba_dataset(train, indices[:10]),
    )
    predicted = by_arrays.predict(images, masks, cells)
    assert predicted.shape == (80,) and set(predicted.tolist()) <= {0, 1, 2, 3}


def test_parallel_features_equal_serial(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, _ = synthetic
    serial = HandcraftedSVM(progress=False).dataset_features(train, range(20))
    # Threads exercise the chunked parallel path without the cost of starting processes.
    with joblib.parallel_config(backend="threading"):
        parallel = HandcraftedSVM(progress=False, n_jobs=2).dataset_features(train, range(20))
    np.testing.assert_array_equal(serial, parallel)


@pytest.mark.slow
def test_parallel_processes(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, _ = synthetic
    serial = HandcraftedSVM(progress=False).dataset_features(train, range(40))
    parallel = HandcraftedSVM(progress=False, n_jobs=2).dataset_features(train, range(40))
    np.testing.assert_array_equal(serial, parallel)


def test_missing_classes_get_zero_columns(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, test = synthetic
    indices = np.flatnonzero(train.labels != 3)
    svm = HandcraftedSVM(progress=False).fit_dataset(train, indices)
    proba = svm.predict_proba_dataset(test, range(5))
    assert proba.shape == (5, 4)
    np.testing.assert_array_equal(proba[:, 3], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_save_load_roundtrip(tmp_path: Path, synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, test = synthetic
    svm = HandcraftedSVM(progress=False).fit_dataset(train, range(80))
    svm.save(tmp_path / "svm.joblib")
    loaded = HandcraftedSVM.load(tmp_path / "svm.joblib")
    np.testing.assert_array_equal(
        loaded.predict_proba_dataset(test, range(10)), svm.predict_proba_dataset(test, range(10))
    )
    with pytest.raises(FileNotFoundError, match=r"missing\.joblib"):
        HandcraftedSVM.load(tmp_path / "missing.joblib")


def test_missing_mask_needs_segmenter(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, _ = synthetic
    samples = [train[i] for i in range(4)]
    images = [s["image"] for s in samples]
    with pytest.raises(ValueError, match=r"image 0 has no nucleus mask.*segmenter"):
        HandcraftedSVM(progress=False).features(images, None)

    def threshold(batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape == (1, 3, 64, 64) and batch.dtype == torch.uint8
        grey = batch.float().mean(dim=1, keepdim=True)
        return (grey <= grey.quantile(0.15)).to(torch.uint8)

    features = HandcraftedSVM(progress=False, segmenter=threshold).features(images, None)
    assert features.shape == (4, len(FEATURE_NAMES)) and np.isfinite(features).all()


def test_mask_source_segmenter_ignores_the_data_masks(
    synthetic: tuple[SyntheticWBC, SyntheticWBC],
) -> None:
    train, _ = synthetic
    samples = [train[i] for i in range(4)]
    images = [s["image"] for s in samples]
    masks = [s["mask"] for s in samples]
    svm = HandcraftedSVM(progress=False, segmenter="kmeans", mask_source="segmenter")
    own = HandcraftedSVM(progress=False, segmenter="kmeans")
    # "segmenter": the masks given are not used, on arrays and on a dataset alike
    np.testing.assert_array_equal(svm.features(images, masks), own.features(images, None))
    np.testing.assert_array_equal(svm.dataset_features(train, range(4)),
                                  own.features(images, None))  # fmt: skip
    # "batch" (the default) measures the data's own masks, which differ from k-means'
    assert not np.allclose(own.dataset_features(train, range(4)), own.features(images, None))
    with pytest.raises(ValueError, match=r"mask_source.*'segmenter' needs a segmenter"):
        HandcraftedSVM(mask_source="segmenter")
    with pytest.raises(ValueError, match=r"argument 'mask_source': expected"):
        HandcraftedSVM(segmenter="kmeans", mask_source="data")  # type: ignore[arg-type]


def test_empty_mask_policy() -> None:
    images = [_cell_image(), _cell_image()]
    masks = [_disc(20), np.zeros((96, 96), dtype=np.uint8)]
    with pytest.raises(ValueError, match=r"image 1: the nucleus mask is empty"):
        HandcraftedSVM(progress=False).features(images, masks)
    svm = HandcraftedSVM(progress=False, on_empty="image")
    features = svm.features(images, masks)
    assert np.isfinite(features).all()
    assert svm.fallbacks_ == ["image 1"]


def test_svm_errors(synthetic: tuple[SyntheticWBC, SyntheticWBC]) -> None:
    train, _ = synthetic
    svm = HandcraftedSVM(progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        svm.predict_proba_dataset(train, [0])
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        svm.features([_cell_image(), _cell_image()], [_disc(20)])
    x = np.zeros((4, len(FEATURE_NAMES)))
    with pytest.raises(ValueError, match="at least two classes"):
        svm.fit_features(x, [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"labels must be class indices >= 0"):
        svm.fit_features(x, [0, 1, -1, 1])
    with pytest.raises(ValueError, match=r"expected features \(N, 23\)"):
        svm.fit_features(np.zeros((4, 5)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="calibration_folds"):
        HandcraftedSVM(calibration_folds=1)
    with pytest.raises(ValueError, match="on_empty"):
        HandcraftedSVM(on_empty="skip")  # type: ignore[arg-type]
