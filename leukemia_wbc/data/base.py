"""The dataset base class: records known without decoding, samples decoded on demand.

Every dataset of the library is a :class:`WBCDataset`. A dataset is a list of :class:`Record`
objects (file path, integer label, group, optional mask path) plus a tuple of class names. The
labels and groups are known from the records alone, so splits are computed without decoding a
single image. Decoding happens in :meth:`WBCDataset.__getitem__`, usually inside DataLoader
workers, with the functions of :mod:`leukemia_wbc.data.images` (re-exported here): any mode
(grayscale, RGBA, palette, 16-bit) becomes RGB ``uint8``, resized to ``size``, in the sample
dict of the batch contract.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    MaskCodeError,
    decode_mask,
    image_tensor,
    read_rgb,
    resize_mask,
    resize_rgb,
    size_pair,
)
from .scale import check_pixels_per_um, rescale_mask, rescale_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "UNLABELLED",
    "ImageReadError",
    "MaskCodeError",
    "Record",
    "Sample",
    "WBCDataset",
    "decode_mask",
    "image_tensor",
    "read_rgb",
]

_log = logging.getLogger(__name__)

#: Label of a sample whose class is not known (for example C-NMC's final test set).
UNLABELLED = -1

#: One sample: ``image`` (uint8 ``(3, H, W)``), ``label`` (long scalar), ``group`` and ``path``
#: (str), and optional ``mask`` / ``cell_mask`` (uint8 ``(1, H, W)``, 1 = inside).
Sample = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """Metadata of one sample, known without decoding the image.

    Attributes:
        path: Image file (or, for generated data, a stable identifier).
        label: Index into the dataset's ``classes``, or :data:`UNLABELLED`.
        group: Patient, subject or smear the cell came from; samples that share a group are
            never split across training and evaluation.
        mask_path: Optional nucleus (and cell) mask file.
        pixels_per_um: Optional pixel size of the image (and its mask), in pixels per
            micrometre, for resampling to a common physical scale (see
            :meth:`WBCDataset.with_scale`).
    """

    path: str
    label: int
    group: str
    mask_path: str | None = None
    pixels_per_um: float | None = None


class WBCDataset(Dataset[Sample | None]):
    """A labelled set of single-cell images, described by records.

    Subclasses build the records from a dataset's on-disk layout and pass them to this
    constructor; they may override :meth:`load_sample` for data that does not come from files.

    Args:
        records: One :class:`Record` per sample.
        classes: Class names; ``Record.label`` indexes this tuple.
        size: Output size (int for a square, or ``(height, width)``); ``None`` keeps each
            file's size (then a DataLoader can only batch equally sized images).
        on_error: ``"raise"`` (default) raises :class:`ImageReadError` naming the file;
            ``"skip"`` logs the error, counts it in :attr:`skipped` and returns ``None``, which
            :func:`leukemia_wbc.data.datamodule.collate_samples` drops from the batch.
        pixels_per_um: Pixel size of every image, in pixels per micrometre (the value of the
            microscope and camera that took them); replaces the records' own. ``None`` keeps
            the records' (a dataset class may know its source's).

    Raises:
        ValueError: No records, a label outside ``classes``, an unknown ``on_error``, or a
            pixel size that is not a positive number.
    """

    def __init__(
        self,
        records: Sequence[Record],
        classes: Sequence[str],
        *,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        super().__init__()
        self.records: list[Record] = list(records)
        #: Pixel size of every image (replaces the records' own); ``None``: the records'.
        self.pixels_per_um: float | None = check_pixels_per_um(
            pixels_per_um, f"{type(self).__name__}(pixels_per_um=...)"
        )
        #: Scale every sample is resampled to before the cut to :attr:`size` (see
        #: :meth:`with_scale`); ``None``: each image is resized to ``size`` as it is.
        self.target_pixels_per_um: float | None = None
        self.classes: tuple[str, ...] = tuple(classes)
        self.size: tuple[int, int] | None = size_pair(size)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error: Literal["raise", "skip"] = on_error
        self.skipped: list[str] = []
        if not self.records:
            raise ValueError(f"{type(self).__name__}: the dataset is empty (no records found)")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"{type(self).__name__}: duplicate class names in {self.classes}")
        bad = [
            r
            for r in self.records
            if not (r.label == UNLABELLED or 0 <= r.label < len(self.classes))
        ]
        if bad:
            raise ValueError(
                f"{type(self).__name__}: {bad[0].path} has label {bad[0].label}; expected "
                f"{UNLABELLED} (unlabelled) or an index into the {len(self.classes)} classes "
                f"{self.classes}"
            )

    # -- metadata, never decodes an image ---------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """Per-sample class indices (``int64``; :data:`UNLABELLED` where unknown)."""
        return np.fromiter((r.label for r in self.records), dtype=np.int64, count=len(self.records))

    @property
    def groups(self) -> list[str]:
        """Per-sample group (patient, subject or smear) names."""
        return [r.group for r in self.records]

    @property
    def paths(self) -> list[str]:
        """Per-sample image paths (or identifiers)."""
        return [r.path for r in self.records]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def has_masks(self) -> bool:
        """Whether every sample has a nucleus mask."""
        return all(r.mask_path is not None for r in self.records)

    def class_counts(self) -> dict[str, int]:
        """Number of labelled samples per class name (classes without samples count 0)."""
        counts = Counter(int(x) for x in self.labels if x != UNLABELLED)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, indices: Iterable[int]) -> WBCDataset:
        """A dataset of the same kind restricted to ``indices`` (records shared, not copied).

        Args:
            indices: Positions to keep, in the order given.

        Returns:
            A shallow copy whose ``records`` are the selected ones.

        Raises:
            ValueError: ``indices`` is empty.
        """
        chosen = [self.records[int(i)] for i in indices]
        if not chosen:
            raise ValueError(f"{type(self).__name__}.subset: no indices given")
        clone = copy.copy(self)
        clone.records = chosen
        clone.skipped = []
        return clone

    def with_size(self, size: int | tuple[int, int] | None) -> WBCDataset:
        """A view of this dataset that decodes to another output size; this one is unchanged.

        The view is a shallow copy: records, classes and the :attr:`skipped` list are shared,
        only ``size`` differs. :class:`~leukemia_wbc.data.WBCDataModule` reads its dataset
        through such a view, so a DataModule never changes the dataset it was given.

        Args:
            size: Output size (int for a square, or ``(height, width)``); ``None`` keeps each
                file's size.

        Returns:
            The view (of the same class).

        Raises:
            ValueError: A side that is not positive.
        """
        view = copy.copy(self)
        view.size = size_pair(size)
        return view

    def pixel_size(self, index: int) -> float | None:
        """Pixels per micrometre of sample ``index`` (the dataset's value, else its record's).

        Args:
            index: Position of the record.

        Returns:
            The pixel size, or ``None`` when it is not known.
        """
        return self.pixels_per_um or self.records[index].pixels_per_um

    def with_scale(self, pixels_per_um: float | None) -> WBCDataset:
        """A view of this dataset that resamples each image to a common physical scale.

        Each image (and its masks) is resampled by ``pixels_per_um`` divided by its own pixel
        size, then cut or padded at its centre to :attr:`size` (padding takes the colour of
        the image's border), so that a cell is the same number of pixels whatever the lab's
        magnification. This dataset is unchanged.

        Args:
            pixels_per_um: The common scale, in pixels per micrometre; ``None`` turns the
                resampling off (each image is resized to ``size`` as it is).

        Returns:
            The view (of the same class).

        Raises:
            ValueError: A scale that is not positive, or a sample whose pixel size is not
                known (the error names its file and the argument that sets it).
        """
        target = check_pixels_per_um(pixels_per_um, "target_pixels_per_um")
        if target is not None:
            unknown = next((i for i in range(len(self)) if self.pixel_size(i) is None), None)
            if unknown is not None:
                raise ValueError(
                    f"{type(self).__name__}: {self.records[unknown].path} has no known pixel "
                    "size, so it cannot be resampled to a physical scale; pass the dataset "
                    "pixels_per_um= (pixels per micrometre of its microscope and camera)"
                )
        view = copy.copy(self)
        view.target_pixels_per_um = target
        return view

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.class_counts().items())
        return f"{type(self).__name__}(n={len(self)}, classes=({counts}), size={self.size})"

    # -- decoding -------------------------------------------------------------------------
    def load_sample(self, index: int) -> Sample:
        """Decode sample ``index`` into the sample dict (no error handling).

        Args:
            index: Position of the record.

        Returns:
            The sample dict: ``image``, ``label``, ``group``, ``path`` and, when the record has
            a mask file, ``mask`` and (if the file encodes it) ``cell_mask``.

        Raises:
            ImageReadError: The image or the mask cannot be read, or they differ in size.
        """
        rec = self.records[index]
        factor = self._scale_factor(index)
        if rec.mask_path is None and factor is None:
            image = read_rgb(rec.path, self.size)
        else:
            image = read_rgb(rec.path, None)
            h, w = image.shape[:2]
            if factor is not None:
                image = rescale_rgb(image, factor, self.size)
            elif self.size is not None and (h, w) != self.size:
                image = resize_rgb(image, self.size)
        sample: Sample = {
            "image": image_tensor(image),
            "label": torch.tensor(rec.label, dtype=torch.long),
            "group": rec.group,
            "path": rec.path,
        }
        if rec.mask_path is not None:
            nucleus, cell = decode_mask(rec.mask_path)
            if nucleus.shape != (h, w):
                raise ImageReadError(
                    f"{rec.mask_path}: mask is {nucleus.shape[1]}x{nucleus.shape[0]} pixels but "
                    f"its image {rec.path} is {w}x{h}; expected a mask of the image's size"
                )
            sample["mask"] = self._fit_mask(nucleus, factor)
            if cell is not None:
                sample["cell_mask"] = self._fit_mask(cell, factor)
        return sample

    def _scale_factor(self, index: int) -> float | None:
        """Output pixels per input pixel of sample ``index`` (``None``: no physical scale)."""
        if self.target_pixels_per_um is None:
            return None
        own = self.pixel_size(index)
        if own is None:  # records changed after with_scale checked them
            raise ValueError(f"{self.records[index].path}: no known pixel size")
        return self.target_pixels_per_um / own

    def _fit_mask(self, mask: np.ndarray, factor: float | None) -> torch.Tensor:
        """A decoded mask brought to the sample's geometry, as a ``(1, H, W)`` tensor."""
        if factor is not None:
            fitted = rescale_mask(mask, factor, self.size)
        else:
            fitted = resize_mask(mask, self.size or (mask.shape[0], mask.shape[1]))
        return torch.from_numpy(fitted).unsqueeze(0)

    def __getitem__(self, index: int) -> Sample | None:
        try:
            return self.load_sample(index)
        except ImageReadError as err:
            if self.on_error == "raise":
                raise
            self.skipped.append(self.records[index].path)
            _log.warning("skipping unreadable sample: %s", err)
            return None
