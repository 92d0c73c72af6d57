"""ALL-IDB: the Acute Lymphoblastic Leukemia Image Database (ALL-IDB1 smears, ALL-IDB2 cells)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ._files import find_dirs, list_images, require_dir
from .base import ImageReadError, Record, Sample, WBCDataset

__all__ = ["ALLIDB1", "ALLIDB2", "read_xyc"]

_CLASSES = ("normal", "blast")
_NAME = re.compile(r"Im(\d+)_([01])")
_LAYOUT2 = "ALL_IDB2/img/ImNNN_Y.tif (Y = 1 blast, 0 normal)"
_LAYOUT1 = "ALL_IDB1/im/ImNNN_Y.jpg and ALL_IDB1/xyc/ImNNN_Y.xyc (Y = 1: blasts present)"


def _find_part(root: Path, part: str, sub: str, layout: str) -> Path:
    """The folder ``<part>/<sub>`` under ``root``, or ``root`` itself when it is that folder."""
    if root.name == sub and root.parent.name == part:
        return root
    found = [
        d / sub for d in find_dirs(root, [part]) if (d / sub).is_dir() and "__MACOSX" not in d.parts
    ]
    if not found:
        raise FileNotFoundError(f"{part}: no folder {part}/{sub} under {root}; expected {layout}")
    if len(found) > 1:
        raise ValueError(
            f"{part}: several {part}/{sub} folders under {root} ({', '.join(map(str, found))}); "
            "expected one copy: pass the folder of the copy to use as root"
        )
    return found[0]


def _labelled_images(folder: Path, dataset: str, layout: str) -> list[tuple[Path, int]]:
    """The images ``ImNNN_Y.*`` of ``folder`` with their label ``Y``, in number order."""
    out: list[tuple[int, Path, int]] = []
    for path in list_images(folder):
        m = _NAME.fullmatch(path.stem)
        if m is None:
            raise ValueError(
                f"{path}: {dataset} file names are ImNNN_Y with Y = 0 or 1; cannot tell the "
                f"label of this file (expected layout: {layout})"
            )
        out.append((int(m[1]), path, int(m[2])))
    if not out:
        raise FileNotFoundError(f"{dataset}: no ImNNN_Y images in {folder}; expected {layout}")
    return [(path, label) for _, path, label in sorted(out, key=lambda t: (t[0], t[1].name))]


def read_xyc(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an ALL-IDB1 ``.xyc`` file: one blast centroid ``x y`` per line.

    Args:
        path: The ``.xyc`` file. Blank lines are ignored; an empty file means no blast.

    Returns:
        ``float64`` array of shape ``(N, 2)``: column ``x`` (pixels from the left) and row ``y``
        (pixels from the top) in the full-size image.

    Raises:
        ValueError: A line is not two finite numbers separated by white space, or the file is
            not text; the message names the file and the line number.
        FileNotFoundError: The file does not exist.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not a text file ({err}); expected lines 'x y'") from err
    points: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            x, y = (float(v) for v in fields) if len(fields) == 2 else (math.nan, math.nan)
        except ValueError:
            x = y = math.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{p}, line {number}: {line.strip()!r}; expected two numbers 'x y'")
        points.append((x, y))
    return np.array(points, dtype=np.float64).reshape(-1, 2)


class ALLIDB2(WBCDataset):
    """ALL-IDB2: 260 single-cell crops, normal lymphocytes versus lymphoblasts.

    Source: ALL-IDB, the Acute Lymphoblastic Leukemia Image Database of the Università degli
    Studi di Milano (https://scotti.di.unimi.it/all/). ALL-IDB2 holds 260 crops of 257x257
    pixels (130 blasts ``Im001_1`` to ``Im130_1``, 130 normal ``Im131_0`` to ``Im260_0``) cut
    around one cell from the ALL-IDB1 smears.

    Licence: free for non-commercial research on request to the authors; not redistributable.

    Citation: Labati R. D., Piuri V., Scotti F., "ALL-IDB: the acute lymphoblastic leukemia
    image database for image processing", IEEE ICIP 2011, pp. 2045-2048.

    On-disk layout: ``ALL_IDB2/img/ImNNN_Y.tif`` with ``Y`` = 1 (blast) or 0 (normal); ``root``
    may be the ``img`` folder, ``ALL_IDB2`` or any parent. Labels: ``classes = ("normal",
    "blast")``, label = ``Y``.

    Masks: with ``mask_root``, a folder holding one nucleus mask per image with the image's stem
    and any image suffix (``Im001_1.png``), either an 8-bit mask (binary, or 0 / 128 / 255 for
    background / cytoplasm / nucleus) or the published RGB colour code (nucleus cyan
    ``(0, 255, 255)``, cytoplasm blue ``(0, 0, 255)``, background white); see
    :func:`~leukemia_wbc.data.base.decode_mask`.

    Groups: ALL-IDB publishes no patient ids and no map from crops to smears, so each image is
    its own group (its stem, ``"Im001_1"``). Crops of one patient can therefore fall on both
    sides of a split; prefer a patient-level dataset for leakage-free estimates.

    Args:
        root: ``ALL_IDB2/img``, ``ALL_IDB2`` or a folder above it.
        mask_root: Optional folder of nucleus masks named like the images.
        size: Output size (int for a square, or ``(height, width)``); ``None`` keeps 257x257.
        on_error: ``"raise"`` or ``"skip"`` unreadable images (see :class:`WBCDataset`).
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: The image folder or ``mask_root`` is missing, or an image has no mask.
        ValueError: A file name is not ``ImNNN_Y``, several copies of the dataset or several
            masks for one image are found.
    """

    classes: tuple[str, ...] = _CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        mask_root: str | os.PathLike[str] | None = None,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        root_path = require_dir(Path(root), "ALL-IDB2", _LAYOUT2)
        img_dir = _find_part(root_path, "ALL_IDB2", "img", _LAYOUT2)
        masks: dict[str, list[Path]] = {}
        if mask_root is not None:
            mask_dir = require_dir(Path(mask_root), "ALL-IDB2 masks", "<mask_root>/ImNNN_Y.png")
            for m in list_images(mask_dir):
                masks.setdefault(m.stem, []).append(m)
        records: list[Record] = []
        for path, label in _labelled_images(img_dir, "ALL-IDB2", _LAYOUT2):
            mask: str | None = None
            if mask_root is not None:
                found = masks.get(path.stem, [])
                if not found:
                    raise FileNotFoundError(
                        f"{path}: no nucleus mask {Path(mask_root) / path.stem}.<png|tif|bmp|...> "
                        "found; expected one mask per image, named with the image's stem"
                    )
                if len(found) > 1:
                    raise ValueError(
                        f"{path}: several masks match ({', '.join(map(str, found))}); expected one"
                    )
                mask = str(found[0])
            records.append(Record(str(path), label, path.stem, mask))
        super().__init__(
            records, _CLASSES, size=size, on_error=on_error, pixels_per_um=pixels_per_um
        )
        self.root: Path = img_dir


class ALLIDB1(WBCDataset):
    """ALL-IDB1: 108 whole blood smears with the centroids of their blasts.

    Not a single-cell dataset: each sample is a full 2592x1944 JPEG field of view holding many
    cells; it serves detection and counting. Source: ALL-IDB (https://scotti.di.unimi.it/all/).

    Licence: free for non-commercial research on request to the authors; not redistributable.

    Citation: Labati R. D., Piuri V., Scotti F., "ALL-IDB: the acute lymphoblastic leukemia
    image database for image processing", IEEE ICIP 2011, pp. 2045-2048.

    On-disk layout: ``ALL_IDB1/im/ImNNN_Y.jpg`` (``Y`` = 1 when the smear holds at least one
    blast, 0 otherwise) and ``ALL_IDB1/xyc/ImNNN_Y.xyc``, one blast centroid ``x y`` per line
    (see :func:`read_xyc`). A ``Y = 0`` image may have no ``.xyc`` file or an empty one.
    ``root`` may be ``ALL_IDB1`` or any parent.

    Labels: ``classes = ("normal", "blast")``, label = ``Y``. Groups: no patient ids are
    published; each smear is its own group (its stem). The ``.xyc`` files are read and checked
    when the dataset is built, without decoding any image; :meth:`load_sample` adds a
    ``centroids`` tensor to the sample, so batch with ``batch_size=1`` or a collate function
    that keeps lists.

    Args:
        root: ``ALL_IDB1`` or a folder above it.
        size: Output size; ``None`` (default) keeps each image's native size.
        on_error: ``"raise"`` or ``"skip"`` unreadable images (see :class:`WBCDataset`).
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: The image folder is missing, or a ``Y = 1`` image has no ``.xyc``.
        ValueError: A file name is not ``ImNNN_Y``; an ``.xyc`` line is malformed (the message
            names the file and line); a ``Y = 0`` image lists blast centroids.
    """

    classes: tuple[str, ...] = _CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        size: int | tuple[int, int] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        root_path = require_dir(Path(root), "ALL-IDB1", _LAYOUT1)
        im_dir = _find_part(root_path, "ALL_IDB1", "im", _LAYOUT1)
        xyc_dir = im_dir.parent / "xyc"
        xyc_files = (
            {p.stem: p for p in xyc_dir.iterdir() if p.suffix.lower() == ".xyc"}
            if xyc_dir.is_dir()
            else {}
        )
        records: list[Record] = []
        self._centroids: dict[str, np.ndarray] = {}
        for path, label in _labelled_images(im_dir, "ALL-IDB1", _LAYOUT1):
            xyc = xyc_files.get(path.stem)
            if xyc is None and label == 1:
                raise FileNotFoundError(
                    f"{path}: no blast centroid file {xyc_dir / path.stem}.xyc; expected one "
                    "for every image with blasts (Y = 1)"
                )
            points = np.zeros((0, 2)) if xyc is None else read_xyc(xyc)
            if label == 0 and len(points):
                raise ValueError(
                    f"{xyc}: lists {len(points)} blast centroids but its image {path.name} is "
                    "named Y = 0 (no blasts); expected an empty or absent file"
                )
            self._centroids[str(path)] = points
            records.append(Record(str(path), label, path.stem))
        super().__init__(
            records, _CLASSES, size=size, on_error=on_error, pixels_per_um=pixels_per_um
        )
        self.root: Path = im_dir.parent

    def with_scale(self, pixels_per_um: float | None) -> WBCDataset:
        """Refused for whole fields: resampling then cutting to ``size`` would cut cells away.

        Args:
            pixels_per_um: The common scale; only ``None`` (no resampling) is accepted.

        Returns:
            The dataset's view without resampling.

        Raises:
            ValueError: A scale was given.
        """
        if pixels_per_um is not None:
            raise ValueError(
                "ALL-IDB1 holds whole smear fields, which are not resampled to a physical "
                "scale (cutting them to size would cut cells away); use ALL-IDB2's cell crops "
                "or the smear analyzer"
            )
        return super().with_scale(None)

    def centroids(self, index: int) -> np.ndarray:
        """Blast centroids of sample ``index`` in full-size pixel coordinates (no decoding).

        Args:
            index: Position of the record.

        Returns:
            ``float64`` array ``(N, 2)`` of ``(x, y)``; ``N = 0`` for a smear without blasts.

        Raises:
            IndexError: ``index`` is out of range.
        """
        points: np.ndarray = self._centroids[self.records[index].path].copy()
        return points

    def load_sample(self, index: int) -> Sample:
        """Decode sample ``index`` and add its blast centroids.

        Args:
            index: Position of the record.

        Returns:
            The sample dict of :class:`WBCDataset` plus ``centroids``: ``float32`` ``(N, 2)``
            ``(x, y)`` scaled to the returned image's size.

        Raises:
            ImageReadError: The image cannot be read.
        """
        sample = super().load_sample(index)
        points = self.centroids(index)
        if self.size is not None and len(points):
            path = self.records[index].path
            try:
                with Image.open(path) as img:
                    width, height = img.size
            except (UnidentifiedImageError, OSError) as err:
                raise ImageReadError(f"{path}: cannot read the image size ({err})") from err
            out_h, out_w = sample["image"].shape[1:]
            points = points * np.array([out_w / width, out_h / height])
        sample["centroids"] = torch.from_numpy(points.astype(np.float32))
        return sample
