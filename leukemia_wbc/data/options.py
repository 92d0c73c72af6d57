"""The settings of :class:`~leukemia_wbc.data.WBCDataModule`, in three typed groups.

* :class:`SplitOptions`: which split (k-fold or hold-out) and its fold, shares and seed;
* :class:`PipelineOptions`: the device pipeline (stain normalisation and how its target is
  fitted, background removal, equalisation, colour, augmentation, normalisation);
* :class:`LoaderOptions`: the DataLoaders (workers, balanced sampling, pinned memory).

They are frozen dataclasses that jsonargparse and LightningCLI read (``--data.pipeline.equalize
clahe``, or ``pipeline: {equalize: clahe}`` in a config). Every field is also accepted as a flat
keyword of the DataModule (:class:`FlatOptions`: ``WBCDataModule(ds, fold=3, equalize="clahe")``,
``--data.fold 3``), applied on top of the groups by :func:`group_options`, the one place where
flat keywords are read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from torch import Tensor, nn

from ..transforms.pipeline import ColourMode, EqualizeMode
from ..transforms.stain import MacenkoNormalizer
from .splits import Split

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FlatOptions",
    "LoaderOptions",
    "PipelineOptions",
    "SplitKind",
    "SplitOptions",
    "group_options",
]

_log = logging.getLogger(__name__)

#: ImageNet channel statistics, the default normalisation (what pretrained backbones expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: How a DataModule splits its dataset.
SplitKind = Literal["kfold", "holdout"]

#: What ``stain_normalization`` accepts.
StainChoice = bool | Literal["torch", "staintools"] | MacenkoNormalizer | None


@dataclass(frozen=True)
class SplitOptions:
    """Which split a DataModule computes, from the dataset's labels and groups alone.

    The fold and shares are checked when the split is computed
    (:func:`~leukemia_wbc.data.cv_split`, :func:`~leukemia_wbc.data.holdout_split`), so that
    a DataModule that never splits (one used for its device stage only) may leave them be.

    Attributes:
        kind: ``"kfold"`` (stratified, grouped when the dataset has groups; fold ``fold`` is
            the test part, the next fold validates) or ``"holdout"`` (``val_fraction`` /
            ``test_fraction``).
        fold: Fold index for ``kind="kfold"``, in ``[0, n_splits)``.
        n_splits: Number of folds for ``kind="kfold"`` (at least 3).
        val_fraction: Validation share for ``kind="holdout"``, in ``(0, 1)``.
        test_fraction: Test share for ``kind="holdout"``, in ``[0, 1)``.
        seed: Seed of the split, of the images the stain target is fitted on and of the
            balanced sampler.

    Raises:
        ValueError: An unknown ``kind``.
    """

    kind: SplitKind = "kfold"
    fold: int = 0
    n_splits: int = 10
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("kfold", "holdout"):
            raise ValueError(
                f"split must be 'kfold', 'holdout', a SplitOptions or a Split, got {self.kind!r}"
            )


@dataclass(frozen=True)
class PipelineOptions:
    """The per-pixel device pipeline of a DataModule, and how its stain target is fitted.

    Attributes:
        stain_normalization: ``True`` or ``"torch"`` for a Macenko normaliser with default
            parameters, ``"staintools"`` for one with staintools' Macenko (the ``staintools``
            extra), a :class:`~leukemia_wbc.transforms.stain.MacenkoNormalizer` (fitted or
            not), or ``False`` / ``None`` for none.
        stain_reference: Where the Macenko target comes from: an image file, an image tensor
            (``(3, H, W)`` or a batch), or ``None`` to fit on ``stain_fit_samples`` images drawn
            (with the split's seed) from the training part, never from validation or test
            images. A normaliser passed already fitted is kept as it is when this is ``None``.
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

    Raises:
        ValueError: A ``stain_normalization`` other than the above, ``stain_fit_samples``
            below 1 or ``stain_augmentation`` outside ``[0, 1)``.
    """

    stain_normalization: StainChoice = False
    stain_reference: str | os.PathLike[str] | Tensor | None = None
    stain_fit_samples: int = 16
    equalize: EqualizeMode = "none"
    colour: ColourMode = "rgb"
    background_removal: bool | nn.Module | None = False
    augment: bool | nn.Module | None = True
    stain_augmentation: float = 0.0
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self) -> None:
        choice = self.stain_normalization
        if not (
            choice is None
            or isinstance(choice, bool | MacenkoNormalizer)
            or choice in ("torch", "staintools")
        ):
            raise ValueError(
                "stain_normalization must be True, False, None, 'torch', 'staintools' or a "
                f"MacenkoNormalizer, got {choice!r}"
            )
        if self.stain_fit_samples < 1:
            raise ValueError(f"stain_fit_samples must be at least 1, got {self.stain_fit_samples}")
        if not 0.0 <= self.stain_augmentation < 1.0:
            raise ValueError(
                f"stain_augmentation must lie in [0, 1), got {self.stain_augmentation}"
            )


@dataclass(frozen=True)
class LoaderOptions:
    """How a DataModule's DataLoaders run.

    Attributes:
        num_workers: DataLoader worker processes (0: load in the main process).
        balanced_sampler: Draw training samples with probability inverse to their class
            frequency (with replacement, seeded with the split's seed) instead of shuffling.
        pin_memory: Pin batches in page-locked memory (only used when CUDA is available).

    Raises:
        ValueError: A negative ``num_workers``.
    """

    num_workers: int = 0
    balanced_sampler: bool = False
    pin_memory: bool = True

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")


class FlatOptions(TypedDict, total=False):
    """The flat keywords of :class:`~leukemia_wbc.data.WBCDataModule`: one per group field.

    Each fills the field of the same name in :class:`SplitOptions` (``kind`` is the ``split``
    argument itself), :class:`PipelineOptions` or :class:`LoaderOptions`, on top of the group
    passed (see :func:`group_options`).
    """

    fold: int
    n_splits: int
    val_fraction: float
    test_fraction: float
    seed: int
    stain_normalization: StainChoice
    stain_reference: str | os.PathLike[str] | Tensor | None
    stain_fit_samples: int
    equalize: EqualizeMode
    colour: ColourMode
    background_removal: bool | nn.Module | None
    augment: bool | nn.Module | None
    stain_augmentation: float
    mean: Sequence[float]
    std: Sequence[float]
    num_workers: int
    balanced_sampler: bool
    pin_memory: bool


#: The DataModule argument that takes each group.
_GROUP_ARGS: dict[type[Any], str] = {
    SplitOptions: "split",
    PipelineOptions: "pipeline",
    LoaderOptions: "loader",
}


def _field_names(group: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(group))


def _same(a: Any, b: Any) -> bool:
    """Whether two option values are equal (tensors and modules: the same object)."""
    if a is b:
        return True
    if isinstance(a, Tensor | nn.Module) or isinstance(b, Tensor | nn.Module):
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return tuple(a) == tuple(b)
    return bool(a == b)


def group_options(
    split: SplitKind | SplitOptions | Split,
    pipeline: PipelineOptions,
    loader: LoaderOptions,
    flat: Mapping[str, Any],
) -> tuple[SplitOptions, Split | None, PipelineOptions, LoaderOptions]:
    """The groups a DataModule runs with: the ones given, with the flat keywords applied.

    Args:
        split: ``"kfold"`` / ``"holdout"`` (the kind, other fields at their defaults), a
            :class:`SplitOptions`, or a ready :class:`~leukemia_wbc.data.splits.Split` (used as
            given; the options' ``seed`` still seeds the stain fit and the sampler).
        pipeline: The pipeline group.
        loader: The loader group.
        flat: Flat keywords (:class:`FlatOptions`); each replaces its group's field.

    Returns:
        ``(split options, ready split or None, pipeline options, loader options)``. A flat
        keyword wins over the group's field; where the group set that field to another value
        than its default, a warning is logged (a config with ``fold: 2`` and
        ``--data.split.fold 3`` runs fold 2).

    Raises:
        TypeError: A flat keyword that is no group's field.
        ValueError: A ``split`` that is none of the above, or a field value out of range.
    """
    unknown = sorted(set(flat) - set(FlatOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"WBCDataModule got unexpected keyword argument(s) {unknown}; expected the groups "
            f"split, pipeline, loader or the flat keywords {sorted(FlatOptions.__annotations__)}"
        )
    given = split if isinstance(split, Split) else None
    if isinstance(split, SplitOptions):
        split_options = split
    elif given is not None:
        split_options = SplitOptions()
    elif isinstance(split, str):
        split_options = SplitOptions(kind=split)
    else:
        raise ValueError(
            f"split must be 'kfold', 'holdout', a SplitOptions or a Split, got {split!r}"
        )

    def apply(group: Any) -> Any:
        changes = {k: v for k, v in flat.items() if k in _field_names(type(group))}
        defaults = type(group)()
        for name, value in changes.items():
            current = getattr(group, name)
            if not _same(current, getattr(defaults, name)) and not _same(current, value):
                _log.warning(
                    "WBCDataModule: the flat keyword %s=%r replaces %s.%s=%r",
                    name, value, _GROUP_ARGS[type(group)], name, current,
                )  # fmt: skip
        return dataclasses.replace(group, **changes) if changes else group

    return apply(split_options), given, apply(pipeline), apply(loader)
