"""WBCDataModule: splits, loaders that only decode, and the per-batch device stage."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset, WeightedRandomSampler, default_collate

from ..transforms.augment import paper_augmentation
from ..transforms.pipeline import ColourMode, DevicePipeline, EqualizeMode, make_equalizer
from ..transforms.stain import MacenkoNormalizer
from .base import UNLABELLED, Sample, WBCDataset, image_tensor, read_rgb
from .splits import Split, cv_split, holdout_split

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "WBCDataModule", "collate_samples", "worker_init"]

_log = logging.getLogger(__name__)

#: ImageNet channel statistics, the default normalisation (what pretrained backbones expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_STRING_KEYS = ("group", "path")
#: Keys that only some samples of one dataset may carry: a whole-cell mask comes from mask files
#: that encode the cytoplasm (ALL-IDB2's colour code, Zheng et al.'s grey levels) and not from
#: binary nucleus masks, which one folder may mix. A batch keeps such a key only when every
#: sample has it.
_OPTIONAL_KEYS = frozenset({"cell_mask"})


def collate_samples(samples: Sequence[Sample | None]) -> dict[str, Any]:
    """Collate sample dicts into the batch dict, dropping samples that failed to load.

    Tensors of one shape are stacked; ``group``, ``path`` and tensors whose shape differs
    between samples (such as ALL-IDB1 centroids) become lists. ``cell_mask`` is kept only when
    every sample has one (a folder may mix mask files with and without the cytoplasm). The
    number of dropped samples is reported as ``batch["skipped"]`` (an int tensor) so that the
    DataModule can count them across worker processes.

    Args:
        samples: Samples from :class:`WBCDataset`; ``None`` marks a skipped file.

    Returns:
        The batch dict (possibly with zero samples when every file failed).

    Raises:
        ValueError: The samples do not share the same keys (for example some with a mask and
            some without).
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if not kept:
        return {"skipped": torch.tensor(skipped)}
    keys = set(kept[0]) - _OPTIONAL_KEYS
    for s in kept[1:]:
        if set(s) - _OPTIONAL_KEYS != keys:
            raise ValueError(
                f"samples with different keys in one batch: {sorted(keys)} vs "
                f"{sorted(set(s) - _OPTIONAL_KEYS)} ({s.get('path')}); expected every sample to "
                "have the same fields (e.g. all with masks)"
            )
    keys |= {k for k in _OPTIONAL_KEYS if all(k in s for s in kept)}
    batch: dict[str, Any] = {}
    for key in (k for k in kept[0] if k in keys):
        values = [s[key] for s in kept]
        if key in _STRING_KEYS or not _stackable(values):
            batch[key] = values  # str fields and ragged tensors (e.g. ALL-IDB1 centroids)
        else:
            batch[key] = default_collate(values)
    batch["skipped"] = torch.tensor(skipped)
    return batch


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one BLAS / OpenMP thread per worker process.

    Each worker is one process on one core; letting numpy's BLAS start its own thread pool in
    every worker oversubscribes the cores (on 2 cores, SyntheticWBC rendering in 2 workers ran
    at a third of the speed).

    Args:
        worker_id: Index of the worker (unused).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _stackable(values: Sequence[Any]) -> bool:
    if not all(isinstance(v, Tensor) for v in values):
        return not any(isinstance(v, Tensor) for v in values)
    return len({tuple(v.shape) for v in values}) == 1


def _stain_normalizer(choice: Any) -> Any:
    """The stain normaliser ``WBCDataModule(stain_normalization=choice)`` asks for.

    Args:
        choice: ``True`` / ``"torch"``, ``"staintools"``, a module, or ``False`` / ``None``.

    Returns:
        A new :class:`~leukemia_wbc.transforms.stain.MacenkoNormalizer` of the chosen
        backend, the module itself, or ``None``.

    Raises:
        ValueError: A string other than ``"torch"`` or ``"staintools"``.
        ImportError: ``"staintools"`` without staintools installed.
    """
    if choice is True or choice == "torch":
        return MacenkoNormalizer()
    if choice == "staintools":
        return MacenkoNormalizer(backend="staintools")
    if isinstance(choice, str):
        raise ValueError(
            "stain_normalization must be True, False, None, 'torch', 'staintools' or a "
            f"MacenkoNormalizer, got {choice!r}"
        )
    return choice or None


class WBCDataModule(pl.LightningDataModule):
    """Lightning DataModule over a :class:`WBCDataset` with leakage-free splits.

    Workers only decode and resize (uint8 tensors, cheap to pin and move); every per-pixel
    transform runs batched on the device in :meth:`on_after_batch_transfer`: conversion to float,
    augmentation (training only, masks kept aligned) and normalisation.

    Args:
        dataset: The samples to split.
        size: Image size the dataset resizes to (overrides ``dataset.size``); ``None`` keeps
            the dataset's.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        split: ``"kfold"`` (stratified, grouped when the dataset has groups; fold ``fold`` is
            the test part), ``"holdout"`` (``val_fraction`` / ``test_fraction``) or a ready
            :class:`Split`.
        fold: Fold index for ``split="kfold"``.
        n_splits: Number of folds for ``split="kfold"``.
        val_fraction: Validation share for ``split="holdout"``.
        test_fraction: Test share for ``split="holdout"``.
        seed: Seed of the split and of the balanced sampler.
        stain_normalization: ``True`` or ``"torch"`` for a Macenko normaliser with default
            parameters, ``"staintools"`` for one with staintools' Macenko (the ``staintools``
            extra), a :class:`~leukemia_wbc.transforms.stain.MacenkoNormalizer` (fitted or
            not), or ``False`` / ``None`` for none.
        stain_reference: Where the Macenko target comes from: an image file, an image tensor
            (``(3, H, W)`` or a batch), or ``None`` to fit on ``stain_fit_samples`` images drawn
            (with ``seed``) from the training part, never from validation or test images. A
            normaliser passed already fitted is kept as it is when this is ``None``.
        stain_fit_samples: Training images used to fit the target when there is no reference.
        equalize: ``"none"``, ``"hist"`` or ``"clahe"`` (on luminance).
        colour: ``"rgb"``, or ``"grayscale"`` / ``"hematoxylin"`` to hide the colour (a
            recipe against stain shortcuts; see
            :func:`~leukemia_wbc.transforms.pipeline.colour_input`).
        background_removal: ``True`` for
            :class:`~leukemia_wbc.transforms.enhance.BackgroundRemoval` with defaults, a module,
            or ``False`` / ``None``.
        augment: ``True`` for :func:`leukemia_wbc.transforms.paper_augmentation`, ``False`` /
            ``None`` for none, or a module mapping a batch dict (float image in ``[0, 1]``) to a
            batch dict.
        stain_augmentation: With ``augment=True``, the strength of the added
            :class:`~leukemia_wbc.transforms.StainAugment` (its ``sigma_alpha`` and
            ``sigma_beta``; 0: none). A recipe against stain shortcuts.
        mean: Channel means of the final normalisation.
        std: Channel standard deviations of the final normalisation.
        balanced_sampler: Draw training samples with probability inverse to their class
            frequency (with replacement) instead of shuffling.
        pin_memory: Pin batches in page-locked memory (only used when CUDA is available).

    Raises:
        ValueError: Bad ``split``, ``batch_size`` or normalisation arguments.
        ImportError: ``stain_normalization="staintools"`` without staintools installed.
    """

    def __init__(
        self,
        dataset: WBCDataset,
        *,
        size: int | tuple[int, int] | None = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        split: Literal["kfold", "holdout"] | Split = "kfold",
        fold: int = 0,
        n_splits: int = 10,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        stain_normalization: bool
        | Literal["torch", "staintools"]
        | MacenkoNormalizer
        | None = False,
        stain_reference: str | os.PathLike[str] | Tensor | None = None,
        stain_fit_samples: int = 16,
        equalize: EqualizeMode = "none",
        colour: ColourMode = "rgb",
        background_removal: bool | nn.Module | None = False,
        augment: bool | nn.Module | None = True,
        stain_augmentation: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        balanced_sampler: bool = False,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not isinstance(split, Split) and split not in ("kfold", "holdout"):
            raise ValueError(f"split must be 'kfold', 'holdout' or a Split, got {split!r}")
        self.save_hyperparameters(
            ignore=["dataset", "augment", "split", "stain_normalization", "stain_reference",
                    "background_removal"]
        )  # fmt: skip
        self.dataset = dataset
        if size is not None:
            self.dataset.size = (
                (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_spec = split
        self.fold = fold
        self.n_splits = n_splits
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.balanced_sampler = balanced_sampler
        self.pin_memory = pin_memory and torch.cuda.is_available()
        if stain_fit_samples < 1:
            raise ValueError(f"stain_fit_samples must be at least 1, got {stain_fit_samples}")
        if not 0.0 <= stain_augmentation < 1.0:
            raise ValueError(f"stain_augmentation must lie in [0, 1), got {stain_augmentation}")
        stain = _stain_normalizer(stain_normalization)
        self.stain_reference = stain_reference
        self.stain_fit_samples = stain_fit_samples
        #: Dataset indices the Macenko target was fitted on (set by :meth:`fit_stain`).
        self.stain_fit_indices: np.ndarray | None = None
        # A normaliser passed fitted (with no reference) keeps its target for every split.
        self._stain_preset = stain is not None and stain_reference is None and bool(stain.fitted)
        self._stain_fitted = stain is None or self._stain_preset
        if background_removal is True:
            from ..transforms.enhance import BackgroundRemoval

            background: nn.Module | None = BackgroundRemoval()
        else:
            background = background_removal or None
        self.pipeline = DevicePipeline(
            stain=stain,
            background=background,
            equalize=make_equalizer(equalize),
            augment=(
                paper_augmentation(stain=stain_augmentation or None)
                if augment is True
                else augment or None
            ),
            mean=mean,
            std=std,
            colour=colour,
        )
        self.split: Split | None = None
        self.skipped_count = 0
        # Recorded (as flags) for rebuilding the evaluation pipeline from a checkpoint.
        self.hparams["stain_normalization"] = (
            "staintools" if getattr(stain, "backend", None) == "staintools" else stain is not None
        )
        self.hparams["background_removal"] = background is not None

    # -- splits ------------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the dataset."""
        return self.dataset.classes

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.dataset.num_classes

    def make_split(self) -> Split:
        """Compute (or return) the split; labelled samples only.

        Returns:
            The split over dataset indices.

        Raises:
            ValueError: The dataset has no labelled samples.
        """
        if isinstance(self.split_spec, Split):
            return self.split_spec
        labels = self.dataset.labels
        labelled = np.flatnonzero(labels != UNLABELLED)
        if labelled.size == 0:
            raise ValueError(f"{type(self.dataset).__name__} has no labelled samples to split")
        groups = [self.dataset.groups[i] for i in labelled]
        if self.split_spec == "kfold":
            part = cv_split(
                labels[labelled], groups, fold=self.fold, n_splits=self.n_splits, seed=self.seed
            )
        else:
            part = holdout_split(
                labels[labelled],
                groups,
                val_fraction=self.val_fraction,
                test_fraction=self.test_fraction,
                seed=self.seed,
            )
        return Split(train=labelled[part.train], val=labelled[part.val], test=labelled[part.test])

    def with_split(self, split: Split) -> WBCDataModule:
        """A copy of this DataModule over another split, with its own device pipeline.

        The dataset is shared; the pipeline (augmentation, and the Macenko normaliser, which is
        re-fitted on the new training part unless a reference was given) is copied, so that
        nothing fitted on one split carries over to another. The cross-validator builds each
        fold's DataModule this way.

        Args:
            split: The split to use.

        Returns:
            The new DataModule (not yet set up).
        """
        clone = copy.copy(self)
        clone.pipeline = copy.deepcopy(self.pipeline)
        clone.split_spec = split
        clone.split = None
        clone.skipped_count = 0
        clone.stain_fit_indices = None
        clone._stain_fitted = clone.pipeline.stain is None or self._stain_preset
        clone.trainer = None
        return clone

    def setup(self, stage: str | None = None) -> None:
        """Build the split (once), then fit the Macenko target if it is not fitted yet.

        Args:
            stage: Lightning stage (unused: every part is prepared).
        """
        self._ensure_split()
        if not self._stain_fitted:
            self.fit_stain()

    def _ensure_split(self) -> None:
        if self.split is None:
            self.split = self.make_split()
            try:
                self.split.check(None, self.dataset.groups)
            except ValueError as err:
                if not isinstance(self.split_spec, Split):
                    raise
                _log.warning("the given split leaks: %s", err)
            _log.info(
                "split: %d train, %d val, %d test samples",
                len(self.split.train),
                len(self.split.val),
                len(self.split.test),
            )

    def fit_stain(self) -> None:
        """Fit the Macenko target on ``stain_reference``, or on a seeded training sample.

        Without a reference, ``stain_fit_samples`` images are drawn with ``seed`` from the
        training part only (never validation or test images); the normaliser's target is the
        median of their estimates.

        Raises:
            ValueError: The reference or the sampled training images hold too little tissue.
        """
        stain = self.pipeline.stain
        if stain is None:
            return
        ref = self.stain_reference
        if ref is None:
            self._ensure_split()
            train = self._part("train")
            rng = np.random.default_rng(self.seed)
            chosen = np.sort(rng.choice(train, size=min(self.stain_fit_samples, len(train)),
                                        replace=False))  # fmt: skip
            images = [s["image"] for s in (self.dataset[int(i)] for i in chosen) if s is not None]
            if not images:
                raise ValueError("fit_stain: none of the sampled training images could be read")
            reference = torch.stack(images)
            self.stain_fit_indices = chosen
            _log.info("fitting the Macenko target on %d training images", len(reference))
        elif isinstance(ref, Tensor):
            reference = ref
        else:
            reference = image_tensor(read_rgb(ref, self.dataset.size))
        stain.fit(reference)
        self._stain_fitted = True

    def _part(self, name: Literal["train", "val", "test"]) -> np.ndarray:
        if self.split is None:
            self.setup()
        assert self.split is not None
        idx: np.ndarray = getattr(self.split, name)
        if idx.size == 0:
            raise ValueError(f"the {name} part of the split is empty; choose another split")
        return idx

    def class_weights(self) -> Tensor:
        """Inverse-frequency class weights of the training part, normalised to mean 1.

        Returns:
            ``float32`` tensor with one weight per class (0 for classes absent from training).
        """
        counts = np.bincount(self.dataset.labels[self._part("train")], minlength=self.num_classes)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / self.num_classes, 0.0)
        return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, indices: np.ndarray, *, train: bool) -> DataLoader[Any]:
        sampler = None
        shuffle = train
        if train and self.balanced_sampler:
            labels = self.dataset.labels[indices]
            per_class = np.bincount(labels, minlength=self.num_classes).astype(float)
            weights = 1.0 / per_class[labels]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(
                weights.tolist(), len(indices), replacement=True, generator=generator
            )
            shuffle = False
        return DataLoader(
            Subset(self.dataset, indices.tolist()),
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            worker_init_fn=worker_init,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=train and len(indices) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Training loader (shuffled, or balanced-sampled)."""
        return self._loader(self._part("train"), train=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation loader."""
        return self._loader(self._part("val"), train=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test loader."""
        return self._loader(self._part("test"), train=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        """Loader over the test part (or, without one, the validation part)."""
        split = self.split or self.make_split()
        return self._loader(split.test if split.test.size else split.val, train=False)

    # -- device stage --------------------------------------------------------------------------
    def device_transform(self, batch: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """Per-pixel transforms of a batch already on its device (see :class:`DevicePipeline`).

        Stain normalisation, background removal and equalisation, then (training only) the
        augmentation on image and masks together, then the channel normalisation.

        Args:
            batch: Batch dict with ``uint8`` ``image``.
            train: Whether to augment.

        Returns:
            The batch with a normalised ``float32`` ``image``.

        Raises:
            TypeError: ``image`` is not a ``uint8`` tensor of shape ``(B, 3, H, W)``.
        """
        image = batch.get("image")
        if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 4:
            raise TypeError(
                "batch['image'] must be a uint8 tensor (B, 3, H, W) before the device stage"
            )
        if not self._stain_fitted:
            self.setup()
        self.pipeline.to(image.device)
        out: dict[str, Any] = self.pipeline(batch, train=train)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The device pipeline's state (the Macenko target), saved in Lightning checkpoints.

        Returns:
            A dict holding the pipeline's ``state_dict``.
        """
        return {"pipeline": self.pipeline.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the device pipeline's state (marks the Macenko target as fitted).

        Args:
            state_dict: What :meth:`state_dict` returned.
        """
        self.pipeline.load_state_dict(state_dict["pipeline"])
        self._stain_fitted = True

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run :meth:`device_transform` (Lightning hook; augments only while training).

        Args:
            batch: The collated batch dict on the device.
            dataloader_idx: Index of the loader (unused).

        Returns:
            The transformed batch.
        """
        skipped = batch.pop("skipped", None)
        if isinstance(skipped, Tensor) and int(skipped) > 0:
            self.skipped_count += int(skipped)
            _log.warning("%d unreadable samples skipped so far", self.skipped_count)
        if "image" not in batch:
            return batch
        training = self.trainer is not None and self.trainer.training
        return self.device_transform(batch, train=training)
