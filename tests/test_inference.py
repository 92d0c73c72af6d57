"""The trained-model object: one checkpoint holds classifier, segmenter, pipeline and classes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from leukemia_wbc.checkpoint import build_task, read_checkpoint
from leukemia_wbc.data import SYNTHETIC_CLASSES, ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.data.datamodule import collate_samples
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.models import ClassicalNucleusSegmenter
from leukemia_wbc.models.segmenter import NetworkSegmenter, load_segmenter
from leukemia_wbc.tasks import CellClassifier, DualBranchClassifier, OptimConfig, SegmentationModule
from leukemia_wbc.transforms import register_pipeline_module

SIZE = 32


def _trainer(**kwargs: Any) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)  # fmt: skip


def _dual(**kwargs: Any) -> DualBranchClassifier:
    return DualBranchClassifier("resnet10t", "mobilenetv3_small_050", nucleus_size=32,
                                fusion_features=8, head_hidden=(8,), **kwargs)  # fmt: skip


@register_pipeline_module
class Darken(nn.Module):
    """A user's own background step: scales intensities (a registered custom module)."""

    def __init__(self, factor: float = 0.9) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class Unregistered(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class MyDataModule(WBCDataModule):
    """A user's subclass: the pipeline must not depend on the DataModule's class name."""


@pytest.fixture(scope="module")
def cells() -> SyntheticWBC:
    return SyntheticWBC(64, size=SIZE, seed=3, n_patients=10)


@pytest.fixture(scope="module")
def no_mask_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    SyntheticWBC(40, size=SIZE, seed=4, n_patients=8).to_folder(root)
    shutil.rmtree(root / "masks")  # a folder of cells without masks
    return root


def _folder(root: Path) -> ImageFolderWBC:
    return ImageFolderWBC(root, classes=SYNTHETIC_CLASSES, group_pattern=r"^(patient\d+)_",
                          size=SIZE, recursive=False)  # fmt: skip


def test_round_trip_gives_the_same_probabilities(cells: SyntheticWBC, tmp_path: Path) -> None:
    """Stain normalisation on, a DataModule subclass, a custom registered module, a segmenter."""
    pl.seed_everything(0)
    dm = MyDataModule(cells, size=SIZE, batch_size=16, split="holdout", stain_normalization=True,
                      equalize="clahe", background_removal=Darken(0.8))  # fmt: skip
    task = _dual(segmenter="kmeans", mask_source="segmenter")
    trainer = _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    batch = collate_samples([cells[i] for i in range(10)])
    batch.pop("skipped")
    here = TrainedModel.from_datamodule(task, dm).predict_batch(batch)
    loaded = TrainedModel.from_checkpoint(path, device="cpu")
    there = loaded.predict_batch(batch)
    assert torch.allclose(here, there, atol=1e-6), (here - there).abs().max()
    assert loaded.classes == SYNTHETIC_CLASSES and loaded.size == (SIZE, SIZE)
    assert bool(loaded.pipeline.stain.fitted)  # the fitted target travelled
    assert torch.equal(loaded.pipeline.stain.stain_matrix, dm.pipeline.stain.stain_matrix)
    assert (
        isinstance(loaded.pipeline.background, Darken) and loaded.pipeline.background.factor == 0.8
    )
    assert isinstance(loaded.task.segmenter, ClassicalNucleusSegmenter)
    # the training pipeline without a fitted target would give other probabilities
    assert not torch.allclose(there, TrainedModel(loaded.task, type(loaded.pipeline)(),
                                                  size=SIZE).predict_batch(batch))  # fmt: skip
    assert torch.allclose(loaded.predict(batch["image"], batch_size=4), there, atol=1e-6)


def test_unregistered_pipeline_module_stops_before_training(cells: SyntheticWBC) -> None:
    dm = WBCDataModule(cells, size=SIZE, batch_size=16, split="holdout",
                       background_removal=Unregistered())  # fmt: skip
    task = CellClassifier("resnet10t", head_hidden=(8,))
    with pytest.raises(
        ValueError, match=r"Unregistered is not registered.*register_pipeline_module"
    ):
        _trainer(max_epochs=1).fit(task, datamodule=dm)
    assert task.global_step == 0


def test_classes_come_from_the_data_or_must_match(cells: SyntheticWBC) -> None:
    dm = WBCDataModule(cells, size=SIZE, batch_size=16, split="holdout")
    task = CellClassifier("resnet10t", head_hidden=(8,))
    assert not task.ready
    task.bind_data(dm)
    assert task.classes == SYNTHETIC_CLASSES and task.hparams["num_classes"] == 4
    with pytest.raises(ValueError, match=r"num_classes=2 but SyntheticWBC has 4 classes"):
        CellClassifier("resnet10t", num_classes=2).bind_data(dm)
    reordered = ["normal", "CLL", "AML", "ALL"]
    with pytest.raises(ValueError, match="the same classes in another order"):
        CellClassifier("resnet10t", classes=reordered).bind_data(dm)
    with pytest.raises(ValueError, match="other classes"):
        CellClassifier("resnet10t", classes=["a", "b", "c", "d"]).bind_data(dm)


def test_data_without_masks_needs_a_segmenter(no_mask_folder: Path) -> None:
    dm = WBCDataModule(_folder(no_mask_folder), size=SIZE, batch_size=8, split="holdout")
    with pytest.raises(ValueError, match=r"model\.segmenter: ImageFolderWBC has no nucleus masks"):
        _dual().bind_data(dm)
    task = _dual(segmenter="watershed")
    task.bind_data(dm)  # a classical method name is enough
    assert task.hparams["segmenter"] == "watershed"
    with pytest.raises(ValueError, match="neither a classical method"):
        _dual(segmenter="kmeanz")


@pytest.fixture(scope="module")
def unet_checkpoint(cells: SyntheticWBC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pl.seed_everything(0)
    unet = SegmentationModule("unet", "tu-resnet10t", optim=OptimConfig(lr=3e-3))
    dm = WBCDataModule(cells, size=SIZE, batch_size=16, split="holdout", augment=False)
    trainer = _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(unet, datamodule=dm)
    path = tmp_path_factory.mktemp("unet") / "unet.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_unet_checkpoint_as_segmenter_travels_with_the_classifier(
    unet_checkpoint: Path, no_mask_folder: Path, tmp_path: Path
) -> None:
    segmenter = load_segmenter(unet_checkpoint)
    assert isinstance(segmenter, NetworkSegmenter) and segmenter.size == (SIZE, SIZE)
    copy = tmp_path / "unet.ckpt"
    copy.write_bytes(unet_checkpoint.read_bytes())
    dm = WBCDataModule(_folder(no_mask_folder), size=SIZE, batch_size=8, split="holdout")
    task = _dual(segmenter=str(copy))
    trainer = _trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "dual.ckpt"
    trainer.save_checkpoint(path)
    copy.unlink()  # the U-Net's weights are in the classifier's checkpoint
    model = TrainedModel.from_checkpoint(path, device="cpu")
    assert isinstance(model.task.segmenter, NetworkSegmenter)
    images = torch.stack([dm.dataset[i]["image"] for i in range(4)])
    masks = model.task.segmenter(images)
    assert torch.equal(masks, segmenter(images))
    assert model.predict(images).shape == (4, 4)


def test_segmenter_of_another_size_or_kind_is_refused(
    unet_checkpoint: Path, cells: SyntheticWBC, tmp_path: Path
) -> None:
    other = SyntheticWBC(24, size=64, seed=5, n_patients=8)
    dm = WBCDataModule(other, size=64, batch_size=8, split="holdout")
    with pytest.raises(
        ValueError, match=r"trained on 32x32 images, the classifier's data is 64x64"
    ):
        _dual(segmenter=str(unet_checkpoint), mask_source="segmenter").bind_data(dm)
    classifier = CellClassifier("resnet10t", head_hidden=(8,), classes=SYNTHETIC_CLASSES)
    path = tmp_path / "clf.ckpt"
    trainer = _trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(classifier, datamodule=WBCDataModule(cells, size=SIZE, split="holdout"))
    trainer.save_checkpoint(path)
    with pytest.raises(ValueError, match=r"not a nucleus segmentation checkpoint .*CellClassifier"):
        _dual(segmenter=str(path))


def test_crafted_checkpoints_are_refused_and_run_nothing(
    cells: SyntheticWBC, tmp_path: Path
) -> None:
    task = CellClassifier("resnet10t", head_hidden=(8,), classes=SYNTHETIC_CLASSES)
    trainer = _trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(task, datamodule=WBCDataModule(cells, size=SIZE, split="holdout"))
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    ckpt = read_checkpoint(good)
    marker = tmp_path / "pwned"
    # Lightning's instantiator entries are ignored, never imported
    ckpt["hyper_parameters"]["_instantiator"] = "subprocess.Popen"
    ckpt["hyper_parameters"]["_class_path"] = "this.Foo"
    assert isinstance(build_task(ckpt), CellClassifier)
    # a class_path inside a value is refused
    evil = {
        "class_path": "subprocess.Popen",
        "init_args": {"args": f"touch {marker}", "shell": True},
    }
    ckpt["hyper_parameters"]["head_hidden"] = evil
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match=r"names a class to import .*subprocess.Popen"):
        TrainedModel.from_checkpoint(bad, device="cpu")
    ckpt["hyper_parameters"]["head_hidden"] = [8]
    ckpt["leukemia_wbc_task"] = "Popen"
    torch.save(ckpt, bad)
    with pytest.raises(
        ValueError, match=r"not a leukemia_wbc classifier checkpoint .*it holds a Popen"
    ):
        TrainedModel.from_checkpoint(bad, device="cpu")
    ckpt["leukemia_wbc_task"] = "CellClassifier"
    ckpt["leukemia_wbc_pipeline"]["config"]["background"] = {"type": "Popen", "init": {}}
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="'Popen' is not a registered pipeline module"):
        TrainedModel.from_checkpoint(bad, device="cpu")
    assert not marker.exists()


class Recorder(nn.Module):
    """A segmenter that records what it sees and marks the left half of the image."""

    input_range = "unit"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        mask = torch.zeros(x.shape[0], 1, *x.shape[-2:], dtype=torch.uint8)
        mask[..., : x.shape[-1] // 2] = 1
        return mask


def test_segmenter_sees_the_images_before_enhancement(cells: SyntheticWBC) -> None:
    """Training and inference segment the decoded images; the mask then follows the pipeline."""
    dm = WBCDataModule(cells, size=SIZE, batch_size=8, n_splits=3, stain_normalization=True,
                       equalize="clahe", background_removal=True, augment=True)  # fmt: skip
    task = _dual(segmenter=Recorder(), mask_source="segmenter")
    task.bind_data(dm)
    dm.setup("fit")
    raw = collate_samples([cells[i] for i in range(4)])
    # the training path: Lightning moves the batch (segmenting it), then the pipeline runs
    moved = task.transfer_batch_to_device(raw, torch.device("cpu"), 0)
    seen = task.segmenter.seen[-1]  # type: ignore[union-attr]
    torch.testing.assert_close(seen, raw["image"].float() / 255)
    assert moved["nucleus_source"] == "segmenter"
    assert not torch.equal(moved["mask"], raw["mask"])  # mask_source="segmenter": data's unused
    out = dm.pipeline(moved, train=True)
    assert out["mask"].shape == (4, 1, SIZE, SIZE)
    assert torch.equal(task.nucleus_masks(out), out["mask"])  # the augmented segmenter mask
    # the inference path does the same
    model = TrainedModel.from_datamodule(task, dm)
    model.transform(raw)
    torch.testing.assert_close(task.segmenter.seen[-1], raw["image"].float() / 255)  # type: ignore[union-attr]
    # "batch": the data's own masks are kept, nothing is segmented
    task.mask_source = "batch"
    count = len(task.segmenter.seen)  # type: ignore[union-attr]
    assert task.add_nucleus_masks(raw) is raw
    assert len(task.segmenter.seen) == count  # type: ignore[union-attr]


@pytest.mark.realdata
def test_enhancement_before_segmentation_would_ruin_the_masks(shared_data: Path) -> None:
    """Why the segmenter runs first: on real cells the paper's preprocessing ruins k-means."""
    from leukemia_wbc.data import SegmentationWBC2018

    data = SegmentationWBC2018(shared_data / "segmentation_WBC", subset="Dataset 2", size=96)
    batch = collate_samples([data[i] for i in range(0, 100, 4)])
    dm = WBCDataModule(data, size=96, split="holdout", stain_normalization=True,
                       equalize="clahe", background_removal=True, augment=False)  # fmt: skip
    task = DualBranchClassifier("resnet10t", "mobilenetv3_small_050", segmenter="kmeans",
                                mask_source="segmenter")  # fmt: skip
    task.bind_data(dm)
    dm.setup("fit")
    truth = batch["mask"] > 0

    def dice(masks: Tensor) -> float:
        pred = masks > 0
        inter = (pred & truth).sum(dim=(1, 2, 3)).float()
        return float((2 * inter / (pred.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3)))).mean())

    before = task.nucleus_masks(dm.pipeline(task.add_nucleus_masks(batch)))
    after = task.segment(dm.pipeline(batch)["image"])  # segmenting the enhanced images
    assert dice(before) > 0.9
    assert dice(after) < 0.5


def test_training_segments_each_cell_once(cells: SyntheticWBC) -> None:
    """Masks are kept by path while training (2 epochs, validation included)."""
    dm = WBCDataModule(cells, size=SIZE, batch_size=8, n_splits=3, augment=True)
    recorder = Recorder()
    task = _dual(segmenter=recorder, mask_source="segmenter")
    _trainer(max_epochs=2, num_sanity_val_steps=0).fit(task, datamodule=dm)
    images = [img for x in recorder.seen for img in x]
    distinct = {img.numpy().tobytes() for img in images}
    split = dm.make_split()
    assert len(images) == len(distinct)  # no cell segmented twice in 2 epochs
    assert len(split.val) < len(images) <= len(split.train) + len(split.val)
    # a new segmenter forgets the kept masks; inference never uses them
    task.segmenter = Recorder()
    assert len(task.__dict__["_mask_cache"]) == 0
    model = TrainedModel.from_datamodule(task, dm)
    batch = collate_samples([cells[i] for i in range(4)])
    model.transform(batch)
    model.transform(batch)
    assert sum(x.shape[0] for x in task.segmenter.seen) == 8  # type: ignore[union-attr]


def test_stain_pass_through_and_unreadable_files_are_reported(
    cells: SyntheticWBC, tmp_path: Path
) -> None:
    """``stain_normalised`` marks images the Macenko step left as they were; ``batches`` skips."""
    from PIL import Image

    from leukemia_wbc.data import ImageReadError
    from leukemia_wbc.transforms import DevicePipeline, MacenkoNormalizer

    task = CellClassifier("resnet10t", head_hidden=(8,), classes=SYNTHETIC_CLASSES)
    stain = MacenkoNormalizer().fit(torch.stack([cells[i]["image"] for i in range(8)]))
    model = TrainedModel(task, DevicePipeline(stain=stain), size=SIZE)
    assert model.stain_normalised is None
    files = [tmp_path / "cell.png", tmp_path / "bad.png", tmp_path / "blank.png"]
    Image.fromarray(cells[0]["image"].permute(1, 2, 0).numpy()).save(files[0])
    files[1].write_bytes(b"not an image")
    Image.fromarray(torch.full((SIZE, SIZE, 3), 250, dtype=torch.uint8).numpy()).save(files[2])
    paths = [str(f) for f in files]
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        list(model.batches(paths, batch_size=2))
    batches = list(model.batches(paths, batch_size=2, on_error="skip"))
    assert [names for names, _ in batches] == [[paths[0]], [paths[2]]]
    assert [p for p, _ in batches[0][1]["errors"]] == [paths[1]]
    model.predict_batch(batches[0][1])
    assert model.stain_normalised is not None and model.stain_normalised.tolist() == [True]
    model.predict_batch(batches[1][1])
    assert model.stain_normalised.tolist() == [False]
    assert TrainedModel(task, DevicePipeline(), size=SIZE).stain_normalised is None
