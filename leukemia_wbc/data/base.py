"""The dataset base class: records, image and mask decoding, resizing.

Every dataset of the library is a :class:`WBCDataset`. A dataset is a list of :class:`Record`
objects (file path, integer label, group, optional mask path) plus a tuple of class names. The
labels and groups are known from the records alone, so splits are computed without decoding a
single image. Decoding happens in :meth:`WBCDataset.__getitem__`, usually inside DataLoader
workers: it reads the file with Pillow, converts any mode (grayscale, RGBA, palette, 16-bit) to
RGB ``uint8``, resizes to ``size`` and returns the sample dict of the batch contract.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "UNLABELLED",
    "ImageReadError",
    "Record",
    "Sample",
    "WBCDataset",
    "decode_mask",
    "image_tensor",
    "read_rgb",
]

_log = logging.getLogger(__name__)

#: File suffixes (lower case) that the folder-based loaders treat as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif", ".webp"}
)

#: Label of a sample whose class is not known (for example C-NMC's final test set).
UNLABELLED = -1

#: One sample: ``image`` (uint8 ``(3, H, W)``), ``label`` (long scalar), ``group`` and ``path``
#: (str), and optional ``mask`` / ``cell_mask`` (uint8 ``(1, H, W)``, 1 = inside).
Sample = dict[str, Any]


class ImageReadError(RuntimeError):
    """A file that should hold an image or a mask could not be decoded as one.

    The message names the file and says what was expected.
    """


@dataclass(frozen=True)
class Record:
    """Metadata of one sample, known without decoding the image.

    Attributes:
        path: Image file (or, for generated data, a stable identifier).
        label: Index into the dataset's ``classes``, or :data:`UNLABELLED`.
        group: Patient, subject or smear the cell came from; samples that share a group are
            never split across training and evaluation.
        mask_path: Optional nucleus (and cell) mask file.
    """

    path: str
    label: int
    group: str
    mask_path: str | None = None


def _to_uint8_rgb(img: Image.Image, path: str) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB ``uint8`` array ``(H, W, 3)``."""
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        # 16-bit and 32-bit grayscale: scale to 8 bit instead of clipping at 255.
        arr = np.asarray(img)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            gray = (arr.astype(np.float64) / 257.0).round()
        elif mode == "F":
            finite = arr[np.isfinite(arr)]
            hi = float(finite.max(initial=1.0)) if finite.size else 1.0
            scale = 255.0 if hi <= 1.0 else 255.0 / hi
            gray = np.nan_to_num(arr.astype(np.float64)) * scale
        else:
            gray = arr.astype(np.float64)
        gray8 = np.clip(gray, 0, 255).astype(np.uint8)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on white (the smear background), not on black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(
            f"{path}: decoded to an array of shape {arr.shape} and dtype {arr.dtype}; "
            "expected an RGB uint8 image"
        )
    return arr


def _open(path: str, what: str) -> Image.Image:
    """Open and fully decode a file with Pillow, turning every failure into ImageReadError."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{path}: the file is empty; expected {what}")
        img = Image.open(path)
        return img
    except ImageReadError:
        raise
    except FileNotFoundError as err:
        raise ImageReadError(f"{path}: no such file; expected {what}") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot be read as {what} ({err})") from err


def _resize_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return (size, size)
    h, w = size
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return (int(h), int(w))


def read_rgb(path: str | os.PathLike[str], size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``(H, W, 3)``, optionally resized.

    JPEG files are decoded at a reduced scale when that is still larger than ``size`` (Pillow's
    draft mode), which makes large JPEGs several times cheaper to load.

    Args:
        path: Image file (any format Pillow reads: BMP, JPEG, PNG, TIFF including 16-bit, ...).
        size: ``None`` to keep the size, an int for a square, or ``(height, width)``.

    Returns:
        The image as a contiguous ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ImageReadError: The file is missing, empty, truncated or not an image.
    """
    p = os.fspath(path)
    target = _resize_size(size)
    img = _open(p, "an image")
    try:
        with img:
            if target is not None and img.format == "JPEG":
                img.draft("RGB", (target[1], target[0]))
            img.load()
            arr = _to_uint8_rgb(img, p)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{p}: cannot be decoded as an image ({err})") from err
    if target is not None:
        arr = _resize_rgb(arr, target)
    return _writable(arr)


def image_tensor(arr: np.ndarray) -> torch.Tensor:
    """Turn an RGB ``uint8`` array ``(H, W, 3)`` into a ``uint8`` tensor ``(3, H, W)``.

    The transpose is done by numpy: torch's parallel strided copy wakes its thread pool for
    every image, which on a small machine competes with the decoding itself.

    Args:
        arr: Image array in channels-last layout.

    Returns:
        A contiguous channels-first tensor that owns a copy of the pixels.
    """
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _writable(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array (Pillow's buffers are read-only; torch wants writable)."""
    if arr.flags.writeable and arr.flags.c_contiguous:
        return arr
    return np.array(arr, order="C")


def _resize_rgb(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8`` array to ``(height, width)`` with antialiased bilinear sampling."""
    if arr.shape[:2] == size:
        return arr
    img = Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img)


def decode_mask(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a nucleus mask file as binary nucleus and (when encoded) whole-cell masks.

    Three encodings are understood:

    * grey levels with three values (0 background, about 128 cytoplasm, about 255 nucleus, as
      in Zheng et al. 2018): nucleus is ``value > 191``, cell is ``value > 63``;
    * a binary mask (0 / 1 or 0 / 255): nucleus is ``value > 0``, no cell mask;
    * RGB colour code of ALL-IDB2 masks: nucleus cyan ``(0, 255, 255)``, cytoplasm blue
      ``(0, 0, 255)``, background white.

    Args:
        path: Mask file.
        size: ``(height, width)`` to resize to with nearest-neighbour sampling, or ``None``.

    Returns:
        ``(nucleus, cell)``: ``uint8`` arrays of shape ``(H, W)`` with values 0/1; ``cell`` is
        ``None`` when the mask encodes the nucleus only.

    Raises:
        ImageReadError: The file is missing or unreadable, or its values fit none of the
            encodings above.
    """
    p = os.fspath(path)
    img = _open(p, "a mask image")
    try:
        with img:
            img.load()
            if img.mode in {"RGB", "RGBA", "P"}:
                rgb = np.asarray(img.convert("RGB")).astype(np.int16)
                if np.ptp(rgb, axis=2).max(initial=0) > 0:
                    nucleus, cell = _decode_colour_mask(rgb, p)
                else:
                    nucleus, cell = _decode_grey_mask(rgb[:, :, 0], p)
            else:
                nucleus, cell = _decode_grey_mask(
                    _to_uint8_rgb(img, p)[:, :, 0].astype(np.int16), p
                )
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{p}: cannot be decoded as a mask image ({err})") from err
    if size is not None:
        nucleus = _resize_nearest(nucleus, size)
        cell = None if cell is None else _resize_nearest(cell, size)
    return nucleus, cell


def _decode_grey_mask(grey: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    values = np.unique(grey)
    if values.size <= 2 and values.max(initial=0) > 0:
        return (grey > 0).astype(np.uint8), None
    if values.size <= 2:
        return np.zeros(grey.shape, np.uint8), None
    mid = (grey > 63) & (grey <= 191)
    if not mid.any():
        raise ImageReadError(
            f"{path}: mask has grey levels {values[:8].tolist()}...; expected a binary mask or "
            "the three levels 0 (background), 128 (cytoplasm), 255 (nucleus)"
        )
    return (grey > 191).astype(np.uint8), (grey > 63).astype(np.uint8)


def _decode_colour_mask(rgb: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    nucleus = (r < 128) & (g >= 128) & (b >= 128)
    cytoplasm = (r < 128) & (g < 128) & (b >= 128)
    background = (r >= 128) & (g >= 128) & (b >= 128)
    unknown = ~(nucleus | cytoplasm | background)
    if unknown.mean() > 0.05:
        raise ImageReadError(
            f"{path}: {unknown.mean():.0%} of the mask's pixels are neither nucleus cyan "
            "(0,255,255), cytoplasm blue (0,0,255) nor background white; expected the ALL-IDB "
            "colour code or a grey-level mask"
        )
    return nucleus.astype(np.uint8), (nucleus | cytoplasm).astype(np.uint8)


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask
    img = Image.fromarray(mask)
    return _writable(np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)))


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

    Raises:
        ValueError: No records, a label outside ``classes``, or an unknown ``on_error``.
    """

    def __init__(
        self,
        records: Sequence[Record],
        classes: Sequence[str],
        *,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        super().__init__()
        self.records: list[Record] = list(records)
        self.classes: tuple[str, ...] = tuple(classes)
        self.size: tuple[int, int] | None = _resize_size(size)
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
        if rec.mask_path is None:
            image = read_rgb(rec.path, self.size)
        else:
            image = read_rgb(rec.path, None)
            h, w = image.shape[:2]
            if self.size is not None and (h, w) != self.size:
                image = _resize_rgb(image, self.size)
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
            out = self.size or (h, w)
            sample["mask"] = torch.from_numpy(_resize_nearest(nucleus, out)).unsqueeze(0)
            if cell is not None:
                sample["cell_mask"] = torch.from_numpy(_resize_nearest(cell, out)).unsqueeze(0)
        return sample

    def __getitem__(self, index: int) -> Sample | None:
        try:
            return self.load_sample(index)
        except ImageReadError as err:
            if self.on_error == "raise":
                raise
            self.skipped.append(self.records[index].path)
            _log.warning("skipping unreadable sample: %s", err)
            return None
