"""DevicePipeline order and its wiring into WBCDataModule (stain target, equalisation, state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from leukemia_wbc.data.datamodule import WBCDataModule, collate_samples
from leukemia_wbc.data.synthetic import SyntheticWBC
from leukemia_wbc.transforms import (
    CLAHE,
    DevicePipeline,
    HistogramEqualization,
    MacenkoNormalizer,
    make_equalizer,
)

SIZE = 32
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


# -- helpers ---------------------------------------------------------------------------------------
class _Recorder(nn.Module):
    """Float-batch step that logs its name and input, then applies ``fn``.

    Args:
        name: Name written to the log.
        log: Shared list of ``(name, input)`` entries.
        fn: What the step does to the batch (identity by default).
    """

    def __init__(self, name: str, log: list[tuple[str, Any]], fn: Any = None) -> None:
        super().__init__()
        self.name, self.log, self.fn = name, log, fn

    def forward(self, x: Tensor) -> Tensor:
        """Log and transform.

        Args:
            x: The batch.

        Returns:
            ``fn(x)`` or ``x``.
        """
        self.log.append((self.name, x.clone()))
        return x if self.fn is None else self.fn(x)


class _RecordingAugment(nn.Module):
    """Batch-dict step that logs the dict it receives and darkens the image by 0.1.

    Args:
        log: Shared list of ``(name, input)`` entries.
    """

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.log = log

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Log and darken.

        Args:
            batch: Batch dict with a float ``image``.

        Returns:
            A new dict with the image lowered by 0.1 (clamped at 0).
        """
        self.log.append(("augment", {k: v.clone() for k, v in batch.items()}))
        return {**batch, "image": (batch["image"] - 0.1).clamp(min=0.0)}


class _RecordingStain(MacenkoNormalizer):
    """A MacenkoNormalizer that logs its uint8 input and inverts it.

    Args:
        log: Shared list of ``(name, input)`` entries.
    """

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.log = log

    def forward(self, batch: Tensor) -> Tensor:
        """Log and invert.

        Args:
            batch: uint8 batch.

        Returns:
            ``255 - batch``.
        """
        self.log.append(("stain", batch.clone()))
        return 255 - batch


def _recording_pipeline(log: list[tuple[str, Any]]) -> DevicePipeline:
    """A pipeline whose every step logs its input and changes the image recognisably.

    Args:
        log: Shared list of ``(name, input)`` entries.

    Returns:
        The pipeline with ``MEAN`` / ``STD`` normalisation.
    """
    return DevicePipeline(
        stain=_RecordingStain(log),
        background=_Recorder("background", log, lambda x: x * 0.5),
        equalize=_Recorder("equalize", log, lambda x: x + 0.25),
        augment=_RecordingAugment(log),
        mean=MEAN,
        std=STD,
    )


def _normalised(x: Tensor) -> Tensor:
    """``(x - MEAN) / STD`` per channel.

    Args:
        x: ``(B, 3, H, W)`` float.

    Returns:
        The normalised batch.
    """
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _dataset(n: int = 48, seed: int = 0) -> SyntheticWBC:
    """A small SyntheticWBC (12 patients, 32 px).

    Args:
        n: Number of samples.
        seed: Dataset seed.

    Returns:
        The dataset.
    """
    return SyntheticWBC(n, size=SIZE, seed=seed, n_patients=12)


def _raw_batch(ds: SyntheticWBC, indices: list[int]) -> dict[str, Any]:
    """Collated uint8 batch of ``indices`` without the ``skipped`` counter.

    Args:
        ds: The dataset.
        indices: Sample indices.

    Returns:
        The batch dict.
    """
    batch = collate_samples([ds[i] for i in indices])
    batch.pop("skipped")
    return batch


def _uint8(x: Tensor) -> Tensor:
    """A captured reference as uint8 (float references are scaled from ``[0, 1]``).

    Args:
        x: uint8 or float images.

    Returns:
        uint8 images on the CPU.
    """
    x = x.detach().cpu()
    return x if x.dtype == torch.uint8 else (x.float() * 255).round().clamp(0, 255).byte()


def _capture_fit(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Wrap ``MacenkoNormalizer.fit`` to record every reference it is given.

    Args:
        monkeypatch: pytest's monkeypatch fixture.

    Returns:
        The list the references are appended to (as ``(B, 3, H, W)``).
    """
    calls: list[Tensor] = []
    original = MacenkoNormalizer.fit

    def fit(self: MacenkoNormalizer, reference: Tensor) -> MacenkoNormalizer:
        calls.append(reference.unsqueeze(0) if reference.ndim == 3 else reference)
        return original(self, reference)

    monkeypatch.setattr(MacenkoNormalizer, "fit", fit)
    return calls


def _stain(dm: WBCDataModule) -> MacenkoNormalizer:
    """The datamodule's stain normaliser.

    Args:
        dm: The datamodule.

    Returns:
        ``dm.pipeline.stain`` (asserted to be set).
    """
    stain = dm.pipeline.stain
    assert isinstance(stain, MacenkoNormalizer)
    return stain


# -- DevicePipeline --------------------------------------------------------------------------------
def test_pipeline_order_in_training() -> None:
    log: list[tuple[str, Any]] = []
    pipeline = _recording_pipeline(log)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=g)
    mask = torch.randint(0, 2, (2, 1, 8, 8), dtype=torch.uint8, generator=g)
    out = pipeline({"image": image, "mask": mask, "label": torch.tensor([0, 1])}, train=True)
    assert [name for name, _ in log] == ["stain", "background", "equalize", "augment"]
    # each step saw the previous step's output
    assert torch.equal(log[0][1], image)
    x = (255 - image).float() / 255
    torch.testing.assert_close(log[1][1], x)
    torch.testing.assert_close(log[2][1], x * 0.5)
    augment_in = log[3][1]
    torch.testing.assert_close(augment_in["image"], x * 0.5 + 0.25)
    assert torch.equal(augment_in["mask"], mask)
    # normalisation last, on the augmented image
    expected = _normalised((x * 0.5 + 0.25 - 0.1).clamp(min=0.0))
    torch.testing.assert_close(out["image"], expected)
    assert out["image"].dtype == torch.float32
    assert torch.equal(out["mask"], mask) and torch.equal(out["label"], torch.tensor([0, 1]))


def test_pipeline_skips_augmentation_outside_training() -> None:
    log: list[tuple[str, Any]] = []
    pipeline = _recording_pipeline(log)
    image = torch.full((1, 3, 4, 4), 55, dtype=torch.uint8)
    batch = {"image": image}
    out = pipeline(batch, train=False)
    assert [name for name, _ in log] == ["stain", "background", "equalize"]
    value = 200 / 255 * 0.5 + 0.25  # inverted by the stain step, halved, raised by 0.25
    torch.testing.assert_close(out["image"], _normalised(torch.full((1, 3, 4, 4), value)))
    assert batch["image"] is image  # the input dict is not modified
    prepared = pipeline.prepare(image)
    torch.testing.assert_close(prepared, torch.full((1, 3, 4, 4), value))


def test_pipeline_without_steps_only_normalises() -> None:
    image = torch.randint(0, 256, (3, 3, 5, 7), dtype=torch.uint8)
    out = DevicePipeline(mean=MEAN, std=STD)({"image": image}, train=True)
    torch.testing.assert_close(out["image"], _normalised(image.float() / 255))
    default = DevicePipeline()({"image": image})["image"]
    imagenet = ((image.float() / 255) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / (
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(default, imagenet)


def test_pipeline_with_real_normalizer() -> None:
    ds = _dataset(8)
    image = _raw_batch(ds, list(range(8)))["image"]
    normalizer = MacenkoNormalizer().fit(image[0])
    pipeline = DevicePipeline(stain=normalizer)
    prepared = pipeline.prepare(image)
    assert prepared.dtype == torch.float32
    torch.testing.assert_close(prepared, normalizer.normalize(image)[0].float() / 255)
    assert not torch.equal(prepared, image.float() / 255)
    state = pipeline.state_dict()
    assert {"stain.stain_matrix", "stain.max_concentrations", "stain.fitted"} <= set(state)
    assert {"mean", "std"} <= set(state)
    assert normalizer.last_passthrough.shape == (8,)


@pytest.mark.parametrize(
    "image",
    [
        torch.rand(1, 3, 8, 8),
        torch.zeros(1, 3, 8, 8, dtype=torch.int64),
        torch.zeros(1, 3, 8, 8, dtype=torch.float16),
    ],
    ids=["float32", "int64", "float16"],
)
def test_prepare_rejects_non_uint8(image: Tensor) -> None:
    pipeline = DevicePipeline()
    with pytest.raises(TypeError, match="uint8"):
        pipeline.prepare(image)
    with pytest.raises(TypeError, match="uint8"):
        pipeline({"image": image})


def test_prepare_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected 3 channels"):
        DevicePipeline().prepare(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        DevicePipeline().prepare(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("mean", "std"), [((0.5, 0.5), (1.0, 1.0, 1.0)), ((0.5,) * 3, (1.0, 0.0, 1.0))]
)
def test_pipeline_rejects_bad_statistics(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="mean and std"):
        DevicePipeline(mean=mean, std=std)


def test_make_equalizer() -> None:
    assert make_equalizer("none") is None
    assert isinstance(make_equalizer("hist"), HistogramEqualization)
    assert isinstance(make_equalizer("clahe"), CLAHE)
    with pytest.raises(ValueError, match="equalize must be 'none', 'hist' or 'clahe'"):
        make_equalizer("bogus")  # type: ignore[arg-type]


# -- WBCDataModule: the stain target ---------------------------------------------------------------
def test_stain_fitted_on_training_images_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture_fit(monkeypatch)
    ds = _dataset()
    dm = WBCDataModule(
        ds, size=SIZE, batch_size=8, n_splits=4, augment=False, stain_normalization=True,
        stain_fit_samples=8,
    )  # fmt: skip
    assert not bool(_stain(dm).fitted)
    dm.setup()
    assert dm.split is not None
    assert bool(_stain(dm).fitted)
    assert len(calls) == 1
    reference = _uint8(calls[0])
    assert reference.shape == (8, 3, SIZE, SIZE)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    train = set(dm.split.train.tolist())
    held_out = set(dm.split.val.tolist()) | set(dm.split.test.tolist())
    assert held_out
    matched = []
    for ref in reference:
        same = [i for i in range(len(ds)) if torch.equal(images[i], ref)]
        assert same, "a reference image is not a dataset image"
        assert set(same) <= train and not set(same) & held_out
        matched.append(same[0])
    assert len(set(matched)) == 8  # eight different training images
    assert dm.stain_fit_indices is not None
    assert sorted(matched) == sorted(dm.stain_fit_indices.tolist())
    # set up once: a second setup or a device batch does not fit again
    dm.setup()
    dm.device_transform(_raw_batch(ds, [0, 1]), train=False)
    assert len(calls) == 1
    # the target is the fit of exactly those images
    expected = MacenkoNormalizer().fit(reference)
    torch.testing.assert_close(_stain(dm).stain_matrix, expected.stain_matrix)
    torch.testing.assert_close(_stain(dm).max_concentrations, expected.max_concentrations)


def test_fit_stain_before_setup_fits_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture_fit(monkeypatch)
    dm = WBCDataModule(
        _dataset(), size=SIZE, batch_size=8, n_splits=4, augment=False, stain_normalization=True
    )
    dm.fit_stain()
    dm.setup()
    assert len(calls) == 1 and bool(_stain(dm).fitted)


def test_stain_fit_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture_fit(monkeypatch)
    ds = _dataset()
    kwargs: dict[str, Any] = dict(
        size=SIZE, n_splits=4, augment=False, stain_normalization=True, stain_fit_samples=6
    )
    first, second = WBCDataModule(ds, **kwargs), WBCDataModule(ds, **kwargs)
    other = WBCDataModule(ds, seed=1, **kwargs)
    for dm in (first, second, other):
        dm.setup()
    assert len(calls) == 3
    assert torch.equal(calls[0], calls[1])
    assert torch.equal(_stain(first).stain_matrix, _stain(second).stain_matrix)
    assert not torch.equal(calls[0], calls[2])


def test_stain_fit_happens_before_the_first_device_batch() -> None:
    ds = _dataset()
    dm = WBCDataModule(ds, size=SIZE, n_splits=4, augment=False, stain_normalization=True)
    out = dm.device_transform(_raw_batch(ds, [0, 1, 2]), train=False)  # no explicit setup
    assert bool(_stain(dm).fitted)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 3, SIZE, SIZE)


def _reference_image(seed: int = 5) -> Tensor:
    """A stained reference cell image at the datamodule's size, from another dataset.

    Args:
        seed: Seed of the SyntheticWBC it is drawn from.

    Returns:
        uint8 ``(3, SIZE, SIZE)``.
    """
    return SyntheticWBC(1, size=SIZE, seed=seed)[0]["image"]


@pytest.mark.parametrize("kind", ["tensor", "batch", "str", "path"])
def test_stain_reference(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _reference_image()
    reference: Any = image
    if kind == "batch":
        reference = torch.stack([image, _reference_image(6)])
        image = reference
    elif kind in ("str", "path"):
        path = tmp_path / "reference.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        assert np.array_equal(np.asarray(Image.open(path)), image.permute(1, 2, 0).numpy())
        reference = str(path) if kind == "str" else path
    calls = _capture_fit(monkeypatch)
    dm = WBCDataModule(
        _dataset(), size=SIZE, n_splits=4, augment=False, stain_normalization=True,
        stain_reference=reference,
    )  # fmt: skip
    dm.setup()
    stain = _stain(dm)
    assert bool(stain.fitted) and len(calls) == 1
    expected = MacenkoNormalizer().fit(image)
    torch.testing.assert_close(stain.stain_matrix, expected.stain_matrix)
    torch.testing.assert_close(stain.max_concentrations, expected.max_concentrations)
    assert not torch.allclose(stain.stain_matrix, MacenkoNormalizer().stain_matrix, atol=1e-3)


def test_prefitted_normalizer_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    fitted = MacenkoNormalizer().fit(_reference_image())
    target = fitted.stain_matrix.clone()
    calls = _capture_fit(monkeypatch)
    ds = _dataset()
    dm = WBCDataModule(ds, size=SIZE, n_splits=4, augment=False, stain_normalization=fitted)
    dm.setup()
    dm.device_transform(_raw_batch(ds, [0, 1]), train=False)
    assert _stain(dm) is fitted and not calls
    assert torch.equal(fitted.stain_matrix, target)


def test_prefitted_normalizer_with_reference_is_refitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted = MacenkoNormalizer().fit(_reference_image(7))
    calls = _capture_fit(monkeypatch)
    reference = _reference_image()
    dm = WBCDataModule(
        _dataset(), size=SIZE, n_splits=4, augment=False, stain_normalization=fitted,
        stain_reference=reference,
    )  # fmt: skip
    dm.setup()
    assert len(calls) == 1
    torch.testing.assert_close(fitted.stain_matrix, MacenkoNormalizer().fit(reference).stain_matrix)


def test_state_dict_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _dataset()
    fitted = MacenkoNormalizer().fit(_reference_image())
    source = WBCDataModule(ds, size=SIZE, n_splits=4, augment=False, stain_normalization=fitted)
    state = source.state_dict()
    assert torch.equal(state["pipeline"]["stain.stain_matrix"], fitted.stain_matrix)
    assert bool(state["pipeline"]["stain.fitted"])
    batch = _raw_batch(ds, [0, 1, 2, 3])
    expected = source.device_transform(batch, train=False)["image"]

    calls = _capture_fit(monkeypatch)
    fresh = WBCDataModule(ds, size=SIZE, n_splits=4, augment=False, stain_normalization=True)
    fresh.load_state_dict(state)
    assert bool(_stain(fresh).fitted)
    torch.testing.assert_close(_stain(fresh).stain_matrix, fitted.stain_matrix, atol=0, rtol=0)
    assert torch.equal(fresh.device_transform(batch, train=False)["image"], expected)
    fresh.setup()
    assert not calls  # the restored target is not refitted
    # without the state, a default target gives another image
    default = WBCDataModule(ds, size=SIZE, n_splits=4, augment=False,
                            stain_normalization=MacenkoNormalizer())  # fmt: skip
    assert not torch.equal(default.device_transform(batch, train=False)["image"], expected)


# -- WBCDataModule: equalisation and background removal --------------------------------------------
def test_clahe_and_background_removal() -> None:
    ds = SyntheticWBC(8, size=64, seed=2)
    unit: dict[str, Any] = dict(size=64, n_splits=2, mean=(0, 0, 0), std=(1, 1, 1))
    plain = WBCDataModule(ds, augment=False, background_removal=True, **unit)
    dm = WBCDataModule(ds, augment=True, equalize="clahe", background_removal=True, **unit)
    assert isinstance(dm.pipeline.equalize, CLAHE)
    batch = _raw_batch(ds, list(range(8)))
    out = dm.device_transform(batch, train=False)
    image = out["image"]
    assert image.dtype == torch.float32 and image.shape == (8, 3, 64, 64)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.equal(out["mask"], batch["mask"]) and torch.equal(out["label"], batch["label"])
    assert torch.equal(out["cell_mask"], batch["cell_mask"])
    # background removal fills with 0 outside the cell and keeps the cell
    removed = plain.device_transform(batch, train=False)["image"]
    black = (removed == 0).all(dim=1, keepdim=True)
    cell = batch["cell_mask"].bool()
    assert float(black[~cell].float().mean()) > 0.5
    assert float(black[cell].float().mean()) < 0.05
    kept = ~black.expand_as(removed)  # what is not filled is the input, unchanged
    torch.testing.assert_close(removed[kept], batch["image"][kept].float() / 255)
    # CLAHE then runs on the background-removed image and changes the cell
    assert float((image - removed).abs()[cell.expand_as(image)].mean()) > 0.01
    # with augmentation (training) the masks follow and stay binary
    torch.manual_seed(0)
    trained = dm.device_transform(batch, train=True)
    assert trained["image"].shape == (8, 3, 64, 64) and trained["mask"].dtype == torch.uint8
    assert set(trained["mask"].unique().tolist()) <= {0, 1}
    assert not torch.equal(trained["mask"], batch["mask"])


def test_hist_and_stain_with_imagenet_normalisation() -> None:
    ds = SyntheticWBC(16, size=64, seed=3, n_patients=8)
    dm = WBCDataModule(
        ds, size=64, n_splits=4, augment=False, equalize="hist", stain_normalization=True
    )
    out = dm.device_transform(_raw_batch(ds, list(range(4))), train=False)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (4, 3, 64, 64)
    assert isinstance(dm.pipeline.equalize, HistogramEqualization)
    lowest = (0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    highest = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    per_channel = out["image"].transpose(0, 1).flatten(1)
    assert bool((per_channel.min(1).values >= lowest - 1e-5).all())
    assert bool((per_channel.max(1).values <= highest + 1e-5).all())


# -- WBCDataModule: arguments ----------------------------------------------------------------------
def test_datamodule_bad_arguments() -> None:
    ds = _dataset(8)
    with pytest.raises(ValueError, match="equalize must be"):
        WBCDataModule(ds, equalize="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stain_fit_samples must be at least 1"):
        WBCDataModule(ds, stain_normalization=True, stain_fit_samples=0)
    with pytest.raises(ValueError, match="mean and std"):
        WBCDataModule(ds, std=(1.0, 1.0, 0.0))


def test_datamodule_pipeline_choices() -> None:
    ds = _dataset(8)
    none = WBCDataModule(ds, augment=False)
    assert none.pipeline.stain is None and none.pipeline.equalize is None
    assert none.pipeline.background is None and none.pipeline.augment is None
    custom = MacenkoNormalizer(alpha=2.0)
    dm = WBCDataModule(ds, stain_normalization=custom, background_removal=nn.Identity())
    assert dm.pipeline.stain is custom and isinstance(dm.pipeline.background, nn.Identity)
    assert dm.pipeline.augment is not None  # paper augmentation by default


def test_colour_modes_hide_the_colour() -> None:
    from leukemia_wbc.data import SyntheticWBC, WBCDataModule
    from leukemia_wbc.transforms.pipeline import colour_input

    sample = SyntheticWBC(1, size=64, seed=2)[0]
    x = sample["image"].unsqueeze(0).float() / 255
    gray = colour_input(x, "grayscale")
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    hema = colour_input(x, "hematoxylin")
    nucleus = sample["mask"][0].bool()
    assert hema.shape == x.shape and torch.allclose(hema[:, 0], hema[:, 2])
    # nuclei are dark, the rest light, whatever the stain's colour
    assert hema[0, 0][nucleus].mean() < hema[0, 0][~nucleus].mean() - 0.3
    assert colour_input(x, "rgb") is x
    with pytest.raises(ValueError, match="colour must be"):
        colour_input(x, "sepia")  # type: ignore[arg-type]
    dm = WBCDataModule(SyntheticWBC(8, size=32), size=32, colour="grayscale")
    assert dm.hparams["colour"] == "grayscale" and dm.pipeline.colour == "grayscale"
    out = dm.pipeline({"image": sample["image"][None, :, :32, :32].contiguous()}, train=False)
    assert torch.allclose(out["image"][:, 0] * dm.pipeline.std[0, 0] + dm.pipeline.mean[0, 0],
                          out["image"][:, 1] * dm.pipeline.std[0, 1] + dm.pipeline.mean[0, 1],
                          atol=1e-5)  # fmt: skip
