"""WBCDataModule: splits, loaders that only decode, and the per-batch device stage."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .base import UNLABELLED, WBCDataset
from .loading import collate_samples, empty_mask_paths, make_loader, worker_init
from .options import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FlatOptions,
    LoaderOptions,
    PipelineOptions,
    SplitKind,
    SplitOptions,
    group_options,
)
from .preprocessing import build_pipeline, pipeline_flags, stain_reference
from .splits import Split, cv_split, holdout_split

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "WBCDataModule", "collate_samples", "worker_init"]

_log = logging.getLogger(__name__)

#: Group fields a checkpoint's ``datamodule_hyper_parameters`` leave out (modules, tensors and
#: the kind of split); the stain normaliser and background removal are recorded as flags.
_NOT_RECORDED = frozenset(
    {"kind", "augment", "stain_reference", "stain_normalization", "background_removal"}
)

#: The groups' defaults (frozen, so one shared instance each is safe).
_DEFAULT_PIPELINE = PipelineOptions()
_DEFAULT_LOADER = LoaderOptions()


class WBCDataModule(pl.LightningDataModule):
    """Lightning DataModule over a :class:`WBCDataset` with leakage-free splits.

    Workers only decode and resize (uint8 tensors, cheap to pin and move); every per-pixel
    transform runs batched on the device in :meth:`on_after_batch_transfer`: stain
    normalisation, background removal, equalisation, augmentation (training only, masks kept
    aligned) and normalisation.

    The settings come in three groups, :class:`~leukemia_wbc.data.SplitOptions`,
    :class:`~leukemia_wbc.data.PipelineOptions` and :class:`~leukemia_wbc.data.LoaderOptions`
    (``WBCDataModule(ds, pipeline=PipelineOptions(equalize="clahe"))``,
    ``--data.pipeline.equalize clahe``). As a convenience, each of their fields is also a
    keyword of its own (:class:`~leukemia_wbc.data.FlatOptions`:
    ``WBCDataModule(ds, num_workers=8, n_splits=10, fold=3, equalize="clahe")``,
    ``--data.fold 3``), applied on top of the groups.

    The dataset given is never changed: the DataModule reads it through a view at ``size``
    (:meth:`WBCDataset.with_size <leukemia_wbc.data.WBCDataset.with_size>`), its
    :attr:`dataset`.

    Args:
        dataset: The samples to split.
        size: Image size the DataModule's view of the dataset decodes to; ``None`` keeps the
            dataset's.
        target_pixels_per_um: Resample every image to this many pixels per micrometre before
            the cut to ``size`` (see :meth:`WBCDataset.with_scale
            <leukemia_wbc.data.WBCDataset.with_scale>`), so that a cell is the same number of
            pixels whatever the lab's magnification; every sample needs a known pixel size
            (its dataset's ``pixels_per_um``). ``None`` (default): each image is resized to
            ``size`` as it is (or at the scale of a dataset given as a
            :meth:`~leukemia_wbc.data.WBCDataset.with_scale` view).
        batch_size: Samples per batch.
        split: ``"kfold"`` or ``"holdout"`` (other split fields at their defaults or given as
            flat keywords), a :class:`~leukemia_wbc.data.SplitOptions`, or a ready
            :class:`~leukemia_wbc.data.Split` used as given.
        pipeline: How the device pipeline (:attr:`pipeline`) is built and its stain target
            fitted.
        loader: How the DataLoaders run.
        **options: Flat keywords (:class:`~leukemia_wbc.data.FlatOptions`): any field of the
            three groups by name (``fold``, ``seed``, ``stain_normalization``, ``equalize``,
            ``augment``, ``num_workers``, ...); each replaces that field of its group.

    Raises:
        ValueError: Bad ``split``, ``batch_size`` or option values, or a
            ``target_pixels_per_um`` for a dataset whose pixel size is not known.
        TypeError: A keyword that is no option.
        ImportError: ``stain_normalization="staintools"`` without staintools installed.
    """

    def __init__(
        self,
        dataset: WBCDataset,
        *,
        size: int | tuple[int, int] | None = 224,
        target_pixels_per_um: float | None = None,
        batch_size: int = 32,
        split: SplitKind | SplitOptions | Split = "kfold",
        pipeline: PipelineOptions = _DEFAULT_PIPELINE,
        loader: LoaderOptions = _DEFAULT_LOADER,
        **options: Unpack[FlatOptions],
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        groups = group_options(split, pipeline, loader, options)
        #: The split, pipeline and loader settings in use (flat keywords applied).
        self.split_options: SplitOptions = groups[0]
        self.pipeline_options: PipelineOptions = groups[2]
        self.loader_options: LoaderOptions = groups[3]
        self._given_split: Split | None = groups[1]
        #: The DataModule's view of the dataset (at ``size``); the dataset given is unchanged.
        view = dataset if size is None else dataset.with_size(size)
        if target_pixels_per_um is not None:
            view = view.with_scale(target_pixels_per_um)
        self.dataset: WBCDataset = view
        self.batch_size = batch_size
        #: The per-pixel device stage (see :class:`~leukemia_wbc.transforms.DevicePipeline`).
        self.pipeline = build_pipeline(self.pipeline_options)
        #: Dataset indices the Macenko target was fitted on (set by :meth:`fit_stain`).
        self.stain_fit_indices: np.ndarray | None = None
        stain = self.pipeline.stain
        # A normaliser passed fitted (with no reference) keeps its target for every split.
        self._stain_preset = (
            stain is not None
            and self.pipeline_options.stain_reference is None
            and bool(stain.fitted)
        )
        self._stain_fitted = stain is None or self._stain_preset
        #: The split in use (computed by :meth:`setup`).
        self.split: Split | None = None
        #: Unreadable samples skipped so far (see ``on_error="skip"``).
        self.skipped_count = 0
        #: Samples whose nucleus ``mask`` had no nucleus pixel (an all-zero mask file), by
        #: path: they are kept, and a nucleus crop falls back to the whole cell image.
        self.empty_mask_paths: set[str] = set()
        # Plain values only (the evaluation pipeline of old checkpoints is rebuilt from them).
        record: dict[str, Any] = {"size": size, "batch_size": batch_size}
        if self.dataset.target_pixels_per_um is not None:  # older runs' configs stay the same
            record["target_pixels_per_um"] = self.dataset.target_pixels_per_um
        for group in (self.split_options, self.pipeline_options, self.loader_options):
            names = [f.name for f in fields(group) if f.name not in _NOT_RECORDED]
            record.update((name, getattr(group, name)) for name in names)
        self.save_hyperparameters({**record, **pipeline_flags(self.pipeline)})

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
        if self._given_split is not None:
            return self._given_split
        labels = self.dataset.labels
        labelled = np.flatnonzero(labels != UNLABELLED)
        if labelled.size == 0:
            raise ValueError(f"{type(self.dataset).__name__} has no labelled samples to split")
        groups = [self.dataset.groups[i] for i in labelled]
        opts = self.split_options
        if opts.kind == "kfold":
            part = cv_split(
                labels[labelled], groups, fold=opts.fold, n_splits=opts.n_splits, seed=opts.seed
            )
        else:
            part = holdout_split(
                labels[labelled],
                groups,
                val_fraction=opts.val_fraction,
                test_fraction=opts.test_fraction,
                seed=opts.seed,
            )
        return Split(train=labelled[part.train], val=labelled[part.val], test=labelled[part.test])

    def with_split(self, split: Split) -> WBCDataModule:
        """A copy of this DataModule over another split, with its own device pipeline.

        The dataset view is shared; the pipeline (augmentation, and the Macenko normaliser,
        which is re-fitted on the new training part unless a reference was given) is copied,
        so that nothing fitted on one split carries over to another. The cross-validator
        builds each fold's DataModule this way.

        Args:
            split: The split to use.

        Returns:
            The new DataModule (not yet set up).
        """
        clone = copy.copy(self)
        clone.pipeline = copy.deepcopy(self.pipeline)
        clone._given_split = split
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
                if self._given_split is None:
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

        Without a reference, ``stain_fit_samples`` images are drawn with the split's ``seed``
        from the training part only (never validation or test images); the normaliser's
        target is the median of their estimates.

        Raises:
            ValueError: The reference or the sampled training images hold too little tissue.
        """
        stain = self.pipeline.stain
        if stain is None:
            return
        opts = self.pipeline_options
        if opts.stain_reference is None:
            self._ensure_split()
        train = self._part("train") if opts.stain_reference is None else np.arange(0)
        reference, drawn = stain_reference(
            opts.stain_reference,
            self.dataset,
            train,
            samples=opts.stain_fit_samples,
            seed=self.split_options.seed,
        )
        stain.fit(reference)
        if drawn is not None:
            self.stain_fit_indices = drawn
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
        return make_loader(
            self.dataset,
            indices,
            batch_size=self.batch_size,
            options=self.loader_options,
            train=train,
            labels=self.dataset.labels,
            num_classes=self.num_classes,
            seed=self.split_options.seed,
        )

    def samples_loader(self, indices: Sequence[int]) -> DataLoader[Any]:
        """A loader over chosen samples, in order, as evaluation reads them (a first pass).

        Args:
            indices: Sample positions in :attr:`dataset`.

        Returns:
            The loader (uint8 batches, this module's batch size and workers).
        """
        return self._loader(np.asarray(indices, dtype=np.int64), train=False)

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
        new = [p for p in empty_mask_paths(batch) if p not in self.empty_mask_paths]
        if new:
            self.empty_mask_paths.update(new)
            _log.warning(
                "%d samples with an empty nucleus mask so far (e.g. %s): kept, their "
                "nucleus crop is the whole image",
                len(self.empty_mask_paths),
                new[0],
            )
        if "image" not in batch:
            return batch
        training = self.trainer is not None and self.trainer.training
        return self.device_transform(batch, train=training)
