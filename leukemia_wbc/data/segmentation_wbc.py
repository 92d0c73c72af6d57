"""The segmentation_WBC datasets of Zheng et al. (2018): single WBCs with nucleus/cell masks."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from ._files import require_dir
from .base import Record, WBCDataset
from .scale import check_pixels_per_um

__all__ = [
    "SEGMENTATION_WBC_CLASSES",
    "SEGMENTATION_WBC_PIXELS_PER_UM",
    "SegmentationSubset",
    "SegmentationWBC2018",
]

#: One of the two image collections of the release.
SegmentationSubset = Literal["Dataset 1", "Dataset 2"]

_SUBSETS: tuple[str, ...] = get_args(SegmentationSubset)

#: Class names in the order of the CSV codes 1-5 (label index = code - 1).
SEGMENTATION_WBC_CLASSES: tuple[str, ...] = (
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
)

#: Pixels per micrometre of each collection, estimated here from the experts' cell masks: the
#: median whole-cell diameter of the neutrophils (77 px in Dataset 1, 160 px in Dataset 2)
#: over 13.5 um, the middle of the 12-15 um textbook range of a neutrophil in a blood film
#: (B. J. Bain, Blood Cells: A Practical Guide). The publication gives no pixel size. The ratio
#: of the two (2.1) rests on the masks alone; the absolute values on the assumed diameter.
SEGMENTATION_WBC_PIXELS_PER_UM: dict[str, float] = {"Dataset 1": 5.67, "Dataset 2": 11.86}

_LAYOUT = (
    "<root>/{Dataset 1,Dataset 2}/NNN.bmp + NNN.png (mask), with 'Class Labels of Dataset N.csv' "
    "in <root> or in the dataset folder"
)


def _find_csv(folder: Path, subset: str) -> Path:
    name = f"Class Labels of {subset}.csv"
    for candidate in (folder / name, folder.parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"SegmentationWBC2018: class-label file {name!r} found neither in {folder} nor in "
        f"{folder.parent}; expected {_LAYOUT}"
    )


def _read_labels(csv_path: Path) -> dict[int, int]:
    """Image id -> label index from a ``Class Labels of Dataset N.csv`` file."""
    labels: dict[int, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().casefold() for h in next(reader, [])]
        if (
            header[:1] != ["image id"]
            or len(header) < 2
            or header[1] not in ("class label", "class")
        ):
            raise ValueError(
                f"{csv_path}: header {header}; expected 'image ID,class label' or 'image ID,class'"
            )
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            try:
                image_id, code = int(row[0]), int(row[1])
            except (IndexError, ValueError) as err:
                raise ValueError(
                    f"{csv_path}: line {line}: {row}; expected an integer image id and class 1-5"
                ) from err
            if not 1 <= code <= len(SEGMENTATION_WBC_CLASSES):
                raise ValueError(f"{csv_path}: line {line}: class {code}; expected 1-5")
            if image_id in labels:
                raise ValueError(f"{csv_path}: line {line}: image id {image_id} listed twice")
            labels[image_id] = code - 1
    if not labels:
        raise ValueError(f"{csv_path}: no rows; expected one row per image")
    return labels


def _subset_records(folder: Path, subset: str, pixels_per_um: float | None) -> list[Record]:
    csv_path = _find_csv(folder, subset)
    labels = _read_labels(csv_path)
    images: dict[int, Path] = {}
    for path in sorted(folder.glob("*.bmp"), key=lambda p: p.name):
        if not path.stem.isdigit():
            raise ValueError(f"{path}: image name is not a number; expected NNN.bmp")
        images[int(path.stem)] = path
    missing = sorted(set(labels) - set(images))
    if missing:
        raise FileNotFoundError(
            f"{csv_path}: image id {missing[0]} has no image {folder / f'{missing[0]:03d}.bmp'}"
            f" ({len(missing)} id(s) without an image); expected one NNN.bmp per row"
        )
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise ValueError(
            f"{images[unlabelled[0]]}: image not listed in {csv_path} ({len(unlabelled)} such "
            "image(s)); expected a class label for every image"
        )
    records = []
    for image_id in sorted(images):
        path = images[image_id]
        mask = path.with_suffix(".png")
        if not mask.is_file():
            raise FileNotFoundError(f"{path}: mask {mask} not found; expected a mask per image")
        group = f"{subset}/{path.stem}"
        records.append(Record(str(path), labels[image_id], group, str(mask), pixels_per_um))
    return records


class SegmentationWBC2018(WBCDataset):
    """Zheng et al.'s two WBC segmentation datasets: images, nucleus and cell masks, classes.

    Source: https://github.com/zxaoyou/segmentation_WBC. ``Dataset 1``: 300 images of about
    120x120 pixels (some are a little smaller), yellowish background, from Jiangxi Tecom
    Science Corporation. ``Dataset 2``: 100 images of 300x300 pixels, purple stain with red
    cells around, from the CellaVision blog. The two come from different labs and stains; the
    per-sample source is in :attr:`sources`. Masks were drawn by experts: 0 background, 128
    cytoplasm, 255 nucleus (a few files carry stray low grey levels), decoded by
    :func:`~leukemia_wbc.data.base.decode_mask` into ``mask`` (nucleus) and ``cell_mask``
    (whole cell), both always in the sample. The class labels were added by the authors and
    not checked by a haematologist (their warning): treat the set first as a segmentation set.

    Layout::

        root/Dataset 1/001.bmp, 001.png, ..., 300.bmp, 300.png
        root/Dataset 2/001.bmp, 001.png, ..., 100.bmp, 100.png
        root/Class Labels of Dataset 1.csv   (header 'image ID,class label')
        root/Class Labels of Dataset 2.csv   (header 'image ID,class')

    A class-label CSV may also sit inside its dataset folder. Codes 1-5 are neutrophil,
    lymphocyte, monocyte, eosinophil, basophil (:data:`SEGMENTATION_WBC_CLASSES`). Groups: the
    images carry no patient or smear id, so each image is its own group, named
    ``"<dataset>/<stem>"`` (e.g. ``"Dataset 1/001"``).

    Licence: GPL-3.0.

    Citation: X. Zheng, Y. Wang, G. Wang, J. Liu, "Fast and robust segmentation of white blood
    cell images by self-supervised learning", Micron 107, 55-71 (2018),
    doi:10.1016/j.micron.2018.01.010.

    Args:
        root: The folder holding ``Dataset 1`` and ``Dataset 2``.
        subset: ``"Dataset 1"``, ``"Dataset 2"``, a sequence of them, or ``None`` for both.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size, in pixels per micrometre, for resampling to a common
            physical scale (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`): one value for
            every image, or one per collection (``{"Dataset 2": 12.0}``; a collection left out
            keeps its default). ``None``: :data:`SEGMENTATION_WBC_PIXELS_PER_UM`, estimated
            from the cell masks (Dataset 1 at 5.67, Dataset 2 at 11.86).

    Raises:
        FileNotFoundError: A dataset folder, a class-label CSV, an image a CSV row names, or a
            mask is missing.
        ValueError: An unknown subset, a malformed CSV, or an image the CSV does not list.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        subset: SegmentationSubset | Sequence[SegmentationSubset] | None = None,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | Mapping[str, float] | None = None,
    ) -> None:
        self.root = require_dir(Path(root), "SegmentationWBC2018", _LAYOUT)
        if subset is None:
            chosen: list[str] = list(_SUBSETS)
        else:
            chosen = [subset] if isinstance(subset, str) else list(subset)
        if not chosen or len(set(chosen)) != len(chosen) or any(s not in _SUBSETS for s in chosen):
            raise ValueError(
                f"SegmentationWBC2018: subset {subset!r} is not valid; expected None or one or "
                f"more distinct names of {_SUBSETS}"
            )
        self.subsets: tuple[str, ...] = tuple(chosen)
        scales = dict(SEGMENTATION_WBC_PIXELS_PER_UM)
        every: float | None = None
        if isinstance(pixels_per_um, Mapping):
            unknown = sorted(set(pixels_per_um) - set(_SUBSETS))
            if unknown:
                raise ValueError(
                    f"SegmentationWBC2018: pixels_per_um names {unknown[0]!r}; expected keys "
                    f"of {_SUBSETS}"
                )
            scales.update(pixels_per_um)
        else:
            every = pixels_per_um
        records: list[Record] = []
        for name in chosen:
            folder = require_dir(self.root / name, "SegmentationWBC2018", _LAYOUT)
            scale = check_pixels_per_um(scales[name], f"SegmentationWBC2018 {name}")
            records.extend(_subset_records(folder, name, scale))
        super().__init__(
            records,
            SEGMENTATION_WBC_CLASSES,
            size=size,
            on_error=on_error,
            pixels_per_um=every,
        )

    @property
    def sources(self) -> list[str]:
        """Per-sample source dataset (``"Dataset 1"`` or ``"Dataset 2"``), from the group."""
        return [r.group.split("/", 1)[0] for r in self.records]
