"""Segment once: segmenter masks computed in a first pass, kept on disk, reused, invalidated."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from leukemia_wbc.data import SYNTHETIC_CLASSES, ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.models import ClassicalNucleusSegmenter
from leukemia_wbc.models.segmentation import create_segmentation_net
from leukemia_wbc.models.segmenter import NetworkSegmenter
from leukemia_wbc.tasks import DualBranchClassifier, MaskCache, SegmentOnce, segmenter_fingerprint

SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real image files without masks (the layout of BCCD or a user's folder)."""
    root = tmp_path_factory.mktemp("cells")
    SyntheticWBC(36, size=SIZE, seed=5, n_patients=6).to_folder(root)
    shutil.rmtree(root / "masks")
    return root


def _data(root: Path, size: int = SIZE) -> WBCDataModule:
    cells = ImageFolderWBC(root, classes=SYNTHETIC_CLASSES, group_pattern=r"^(patient\d+)_",
                           size=size)  # fmt: skip
    return WBCDataModule(cells, size=size, batch_size=8, n_splits=3, augment=True)


def _task(segmenter: Any = "multiotsu_blue_green") -> DualBranchClassifier:
    return DualBranchClassifier("resnet10t", "mobilenetv3_small_050", nucleus_size=32,
                                fusion_features=8, head_hidden=(8,),
                                segmenter=segmenter)  # fmt: skip


def _fit(task: DualBranchClassifier, dm: WBCDataModule, cache: Path, epochs: int = 1) -> None:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_train_batches=2, callbacks=[SegmentOnce(cache)])  # fmt: skip
    trainer.fit(task, datamodule=dm)


def _files(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.bits"))


def test_fingerprint_names_what_the_segmenter_computes() -> None:
    """Equal arguments give one name; another method, argument or weight gives another."""
    a = segmenter_fingerprint(ClassicalNucleusSegmenter("kmeans"))
    assert a is not None and a == segmenter_fingerprint(ClassicalNucleusSegmenter("kmeans"))
    assert a[1]["init"]["method"] == "kmeans"
    others = {segmenter_fingerprint(ClassicalNucleusSegmenter("multiotsu_blue_green"))[0],  # type: ignore[index]
              segmenter_fingerprint(ClassicalNucleusSegmenter("kmeans", k=3))[0]}  # type: ignore[index]  # fmt: skip
    assert a[0] not in others and len(others) == 2
    net = NetworkSegmenter(create_segmentation_net("unet", "resnet18"), source="a/unet.ckpt")
    first = segmenter_fingerprint(net)
    net.source = "b/copy.ckpt"  # the same weights from another file: the same masks
    assert segmenter_fingerprint(net) == first
    assert first is not None and len(first[1]["weights_sha256"]) == 64
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3  # one weight changed
    assert segmenter_fingerprint(net)[0] != first[0]  # type: ignore[index]
    assert segmenter_fingerprint(torch.nn.Identity()) is None  # a module it cannot describe


class Counting:
    """A segment function that counts its images and marks the left half."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, image: Tensor) -> Tensor:
        self.images += image.shape[0]
        mask = torch.zeros(image.shape[0], 1, *image.shape[-2:], dtype=torch.uint8)
        mask[..., : image.shape[-1] // 2] = 1
        return mask


def test_disk_cache_is_reused_and_invalidated(folder: Path, tmp_path: Path) -> None:
    """A second cache reads the files; another size or a changed file segments again."""
    seg = ClassicalNucleusSegmenter()
    paths = [str(p) for p in sorted(folder.rglob("*.png"))[:4]]
    image = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    first, segment = MaskCache(), Counting()
    assert first.attach(tmp_path / "cache", seg) is not None
    masks = first.masks(paths, image, segment)
    assert segment.images == 4 and len(_files(tmp_path / "cache")) == 4
    assert (tmp_path / "cache").glob("*/segmenter.json")
    again, segment = MaskCache(), Counting()
    again.attach(tmp_path / "cache", ClassicalNucleusSegmenter())
    assert again.missing(paths, (8, 8)) == []
    assert torch.equal(again.masks(paths, image, segment), masks) and segment.images == 0
    assert again.counts["disk"] == 4
    # another size, another segmenter: nothing is read
    assert again.missing(paths, (16, 16)) == [0, 1, 2, 3]
    other = MaskCache()
    other.attach(tmp_path / "cache", ClassicalNucleusSegmenter("kmeans"))
    assert other.missing(paths, (8, 8)) == [0, 1, 2, 3]
    # an image file rewritten: its mask is stale
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh = MaskCache()
    fresh.attach(tmp_path / "cache", ClassicalNucleusSegmenter())
    assert fresh.missing(paths, (8, 8)) == [0]


def test_a_damaged_mask_file_is_segmented_again(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated (or crafted) file is not trusted: the image is segmented and rewritten."""
    paths = [str(sorted(folder.rglob("*.png"))[0])]
    image = torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)
    cache = MaskCache()
    cache.attach(tmp_path, ClassicalNucleusSegmenter())
    cache.masks(paths, image, Counting())
    (file,) = _files(tmp_path)
    file.write_bytes(b"\x00")
    cache = MaskCache()
    cache.attach(tmp_path, ClassicalNucleusSegmenter())
    segment = Counting()
    out = cache.masks(paths, image, segment)
    assert segment.images == 1 and cache.counts["damaged"] == 1
    assert int(out.sum()) == 32 and len(file.read_bytes()) == 8
    assert str(file) in caplog.text
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ValueError, match=r"mask_cache: .*taken exists and is not a folder"):
        MaskCache().attach(tmp_path / "taken", ClassicalNucleusSegmenter())
    with pytest.raises(ValueError, match=r"mask_cache: .*taken exists and is not a folder"):
        SegmentOnce(tmp_path / "taken")  # refused when the run is set up, before any fold


def test_training_segments_in_a_first_pass_and_the_next_run_reads_the_files(
    folder: Path, tmp_path: Path
) -> None:
    """Run 1 segments train + val once, before training; run 2 (a new task) segments nothing."""
    cache = tmp_path / "cache"
    dm = _data(folder)
    task = _task()
    _fit(task, dm, cache, epochs=2)
    split = dm.split
    assert split is not None
    seen = len(split.train) + len(split.val)
    assert task.mask_cache is not None
    assert task.mask_cache.counts["segmented"] == seen  # each cell once in 2 epochs
    assert len(_files(cache)) == seen
    # the cached masks are the segmenter's
    batch = next(iter(dm.samples_loader(split.train[:4])))
    direct = task.segmenter(batch["image"])  # type: ignore[misc]
    kept = MaskCache()
    kept.attach(cache, task.segmenter)
    assert torch.equal(kept.masks(batch["path"], batch["image"], Counting()), direct)
    # the next fold or run: nothing segmented, every mask read from disk
    again = _task()
    _fit(again, _data(folder), cache)
    assert again.mask_cache is not None and again.mask_cache.counts["segmented"] == 0
    assert again.mask_cache.counts["disk"] > 0
    # another segmenter does not read them
    other = _task("kmeans")
    _fit(other, _data(folder), cache)
    assert other.mask_cache is not None and other.mask_cache.counts["segmented"] == seen
    assert len(list(cache.glob("*/segmenter.json"))) == 2


def test_nothing_is_cached_for_data_with_masks(tmp_path: Path) -> None:
    """The dataset's own masks are used: no first pass, no folder."""
    cells = SyntheticWBC(24, size=SIZE, seed=6, n_patients=6)
    dm = WBCDataModule(cells, size=SIZE, batch_size=8, n_splits=3)
    task = _task()
    _fit(task, dm, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert task.mask_cache is not None and task.mask_cache.counts["segmented"] == 0
    # masks from the segmenter, but samples that are not files: segmented once, in memory
    task = DualBranchClassifier("resnet10t", "mobilenetv3_small_050", nucleus_size=32,
                                fusion_features=8, head_hidden=(8,), segmenter="kmeans",
                                mask_source="segmenter")  # fmt: skip
    _fit(task, dm, tmp_path / "cache")
    assert task.mask_cache is not None and task.mask_cache.folder is None
    assert task.mask_cache.counts["segmented"] > 0 and not (tmp_path / "cache").exists()


def test_augmentation_moves_the_cached_mask_with_the_image(folder: Path, tmp_path: Path) -> None:
    """A mask read from the cache goes through the augmentation's geometry with its image."""
    import kornia.augmentation as K

    from leukemia_wbc.transforms.augment import MaskedAugmentation

    cells = ImageFolderWBC(folder, classes=SYNTHETIC_CLASSES, group_pattern=r"^(patient\d+)_",
                           size=SIZE)  # fmt: skip
    flip = MaskedAugmentation(K.RandomHorizontalFlip(p=1.0))
    dm = WBCDataModule(cells, size=SIZE, batch_size=8, n_splits=3, augment=flip)
    task = _task()
    _fit(task, dm, tmp_path / "cache")
    assert dm.split is not None
    batch = next(iter(dm.samples_loader(dm.split.train[:8])))
    kept = task.add_nucleus_masks(batch, cache_by_path=True)
    assert task.mask_cache is not None and task.mask_cache.counts["segmented"] == len(
        dm.split.train) + len(dm.split.val)  # read, not segmented again  # fmt: skip
    assert torch.equal(kept["mask"], task.segmenter(batch["image"]))  # type: ignore[misc]
    assert kept["mask"].flatten(1).any(1).all()  # every cell has a nucleus to move
    out = dm.device_transform(kept, train=True)
    assert torch.equal(out["mask"].to(torch.uint8), kept["mask"].flip(-1))


def test_cross_validation_segments_each_cell_once_for_all_folds(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three folds share ``<output_dir>/mask_cache``: no cell is segmented by two folds.

    Fold 0 segments its training and validation cells in its first pass and its held-out
    cells as it predicts them: the later folds find every mask on disk.
    """
    import logging

    from leukemia_wbc.experiments import CrossValidator

    dm = _data(folder)
    caplog.set_level(logging.INFO, logger="leukemia_wbc.tasks.segment_once")
    cv = CrossValidator(_task(), dm, tmp_path / "run", n_splits=3, max_epochs=1,
                        early_stopping_patience=None,
                        trainer_kwargs={"limit_train_batches": 1, "enable_progress_bar": False,
                                        "enable_model_summary": False})  # fmt: skip
    cv.run()
    counts = [int(m.split()[1]) for m in caplog.messages if m.startswith("segmenting ")]
    first = cv.split(0)
    assert counts == [len(first.train) + len(first.val)]  # folds 1 and 2: no first pass
    assert len(_files(tmp_path / "run" / "mask_cache")) == len(dm.dataset)
