"""C-NMC 2019: acute lymphoblastic leukemia blasts versus normal B-lymphoid precursors."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ._files import is_image, list_images, require_dir
from .base import UNLABELLED, Record, WBCDataset

__all__ = ["CNMC2019", "subject_is_healthy"]

_DATASET = "C-NMC 2019"
_CLASSES = ("hem", "all")
_SPLITS = ("train", "prelim_test", "final_test")
_PRELIM_DIR = "C-NMC_test_prelim_phase_data"
_FINAL_DIR = "C-NMC_test_final_phase_data"
_CSV_NAME = "C-NMC_test_prelim_phase_data_labels.csv"
_CSV_COLUMNS = ("Patient_ID", "new_names", "labels")
_FOLD = re.compile(r"fold_(\d+)")
_SUBJECT = re.compile(r"[Hh]?\d+")
_CELL_NAME = re.compile(r"UID_(?P<subject>[Hh]?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<cls>all|hem)")
_LAYOUT = (
    "C-NMC_Leukemia/training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>"
    ".bmp (or C-NMC_training_data/fold_N/...), "
    f"[validation_data/]{_PRELIM_DIR}[/{_PRELIM_DIR}]/N.bmp with {_CSV_NAME} anywhere under root, "
    f"[testing_data/]{_FINAL_DIR}[/{_FINAL_DIR}]/N.bmp"
)


def subject_is_healthy(group: str) -> bool:
    """Whether a C-NMC subject id names a healthy donor.

    Subject ids prefixed ``H`` (``H10``) are healthy donors, whose cells are all ``hem``; plain
    numbers (``11``) are ALL patients. In the training folders every ``H`` subject's cells lie
    in ``hem`` and every numbered subject's in ``all``.

    Args:
        group: A group of :class:`CNMC2019` (a subject id such as ``"H10"`` or ``"11"``).

    Returns:
        ``True`` for a healthy donor, ``False`` for an ALL patient.

    Raises:
        ValueError: ``group`` is not a subject id, for example a final-test group
            ``"final:<N>"`` (the subject of those images is not published).
    """
    if not _SUBJECT.fullmatch(group):
        raise ValueError(
            f"{group!r} is not a C-NMC subject id; expected 'H<number>' (healthy donor) or "
            "'<number>' (ALL patient); final-test images have no known subject"
        )
    return group[0] in "Hh"


def _normalise_subject(subject: str) -> str:
    # The release names one healthy donor 'h3' (36 files in fold_2/hem); every other is 'H<n>'.
    return "H" + subject[1:] if subject[0] == "h" else subject


def _parse_cell_name(name: str, where: str) -> tuple[str, str]:
    """Return ``(subject, class)`` of ``UID_<subject>_<image>_<cell>_<all|hem>[.bmp]``."""
    stem = name[:-4] if name.lower().endswith(".bmp") else Path(name).stem
    m = _CELL_NAME.fullmatch(stem)
    if m is None:
        raise ValueError(
            f"{where}: {name!r} does not follow the C-NMC naming "
            "UID_<subject>_<image>_<cell>_<all|hem>.bmp; cannot tell its subject and class"
        )
    return _normalise_subject(m["subject"]), m["cls"]


def _number_key(path: Path) -> tuple[int, str]:
    return (int(path.stem) if path.stem.isdigit() else -1, path.name)


def _has_image(filenames: list[str]) -> bool:
    return any(is_image(Path(f)) for f in filenames)


class _Found:
    """The folders and files of a C-NMC copy found under a root."""

    def __init__(self, root: Path) -> None:
        self.folds: dict[int, list[Path]] = {}
        self.prelim: list[Path] = []
        self.final: list[Path] = []
        self.csvs: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            self.csvs.extend(here / f for f in filenames if f.lower() == _CSV_NAME.lower())
            fold = _FOLD.fullmatch(here.name)
            if fold is not None and any(d in _CLASSES for d in dirnames):
                self.folds.setdefault(int(fold[1]), []).append(here)
                dirnames[:] = []
            elif here.name in (_PRELIM_DIR, _FINAL_DIR) and _has_image(filenames):
                (self.prelim if here.name == _PRELIM_DIR else self.final).append(here)
                dirnames[:] = []


def _only(found: list[Path], what: str, root: Path) -> Path:
    if not found:
        raise FileNotFoundError(
            f"{_DATASET}: no {what} found under {root}; expected layout: {_LAYOUT}"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise ValueError(
            f"{_DATASET}: several {what}s under {root} ({listed}); expected one copy of the "
            "dataset: pass the folder of the copy to use as root"
        )
    return found[0]


def _training_records(found: _Found, folds: Sequence[int] | None, root: Path) -> list[Record]:
    valid = sorted(found.folds)
    if not valid:
        raise FileNotFoundError(
            f"{_DATASET}: no training folder fold_N/{{all,hem}} found under {root}; expected "
            f"layout: {_LAYOUT}"
        )
    chosen = valid if folds is None else [int(k) for k in folds]
    unknown = sorted(set(chosen) - set(valid))
    if unknown or not chosen:
        raise ValueError(
            f"{_DATASET}: folds {list(folds or [])} requested; expected a non-empty selection of "
            f"the organisers' folds found under {root}: {valid}"
        )
    records: list[Record] = []
    for k in sorted(set(chosen)):
        fold_dir = _only(found.folds[k], f"training folder fold_{k}", root)
        for label, cls in enumerate(_CLASSES):
            class_dir = require_dir(fold_dir / cls, _DATASET, _LAYOUT)
            for path in list_images(class_dir):
                subject, suffix = _parse_cell_name(path.name, str(path))
                if suffix != cls:
                    raise ValueError(
                        f"{path}: the file name says '{suffix}' but the file lies in the "
                        f"'{cls}' folder; expected the name's suffix to match its class folder"
                    )
                records.append(Record(str(path), label, subject))
    return records


def _read_labels_csv(csv_path: Path) -> list[tuple[int, str, str, int]]:
    """Rows ``(line, new_name, patient_id, label)`` of the preliminary-test labels CSV."""
    rows: list[tuple[int, str, str, int]] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if any(c not in header for c in _CSV_COLUMNS):
            raise ValueError(
                f"{csv_path}: header is {header}; expected the columns {','.join(_CSV_COLUMNS)}"
            )
        col = {c: header.index(c) for c in _CSV_COLUMNS}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) < len(header):
                raise ValueError(f"{csv_path}, line {line}: {row} has too few columns")
            raw = row[col["labels"]].strip()
            if raw not in ("0", "1"):
                raise ValueError(
                    f"{csv_path}, line {line}: label {raw!r}; expected 1 (all) or 0 (hem)"
                )
            name = row[col["new_names"]].strip()
            rows.append((line, name, row[col["Patient_ID"]].strip(), int(raw)))
    return rows


def _prelim_records(image_dir: Path, csv_path: Path) -> list[Record]:
    images = {p.name: p for p in list_images(image_dir)}
    records: list[Record] = []
    seen: set[str] = set()
    for line, name, patient_id, label in _read_labels_csv(csv_path):
        where = f"{csv_path}, line {line}"
        if name in seen:
            raise ValueError(f"{where}: {name!r} is listed twice; expected one row per image")
        seen.add(name)
        if name not in images:
            raise FileNotFoundError(
                f"{where}: names the image {name!r}, but {image_dir / name} does not exist; "
                "expected every new_names entry to be a file of the preliminary test set"
            )
        subject, suffix = _parse_cell_name(patient_id, where)
        if _CLASSES[label] != suffix:
            raise ValueError(
                f"{where}: Patient_ID {patient_id!r} says '{suffix}' but the label is {label} "
                f"('{_CLASSES[label]}'); expected them to agree"
            )
        records.append(Record(str(images[name]), label, subject))
    unlisted = sorted(set(images) - seen, key=lambda n: _number_key(Path(n)))
    if unlisted:
        raise ValueError(
            f"{image_dir / unlisted[0]}: the image has no row in {csv_path} ({len(unlisted)} "
            "images lack one); expected a label for every image of the preliminary test set"
        )
    return sorted(records, key=lambda r: _number_key(Path(r.path)))


class CNMC2019(WBCDataset):
    """C-NMC 2019: single-cell images of ALL blasts (``all``) and normal B cells (``hem``).

    Source: the C-NMC 2019 challenge (ISBI 2019, "Classification of Normal vs Malignant Cells
    in B-ALL White Blood Cancer Microscopic Images"), distributed by The Cancer Imaging Archive
    (TCIA) and mirrored on Kaggle. Each image is a 450x450 24-bit BMP holding one segmented
    lymphocyte on a black background, stain-normalised by the organisers.

    Licence: Creative Commons Attribution 3.0 (CC BY 3.0).

    Citation: Gupta A., Gupta R. (eds.), ISBI 2019 C-NMC Challenge: Classification in Cancer
    Cell Imaging, Lecture Notes in Bioengineering, Springer, 2019; Mourya S., Kant S., Kumar P.,
    Gupta A., Gupta R., "ALL Challenge dataset of ISBI 2019", TCIA, 2019,
    doi:10.7937/tcia.2019.dc64i46r.

    On-disk layout (``root`` may be the dataset folder or any parent of it; folders are found
    by name, copies under ``__MACOSX`` and hidden folders are ignored):

    * Kaggle: ``C-NMC_Leukemia/training_data/fold_{0,1,2}/{all,hem}/
      UID_<subject>_<image>_<cell>_<all|hem>.bmp``;
      ``C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data/N.bmp`` with
      ``C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data_labels.csv``;
      ``C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data/N.bmp``.
    * TCIA: ``C-NMC_training_data/fold_N/{all,hem}/...``;
      ``C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data/N.bmp`` (the image folder
      may be nested once or not) with the labels CSV anywhere under ``root``;
      ``C-NMC_test_final_phase_data/[C-NMC_test_final_phase_data/]N.bmp``.

    The labels CSV has the header ``Patient_ID,new_names,labels``: the original
    ``UID_..._<all|hem>.bmp`` name, the file name ``N.bmp`` and the label (1 = all, 0 = hem).

    Counts: training 10,661 cells of 73 subjects (47 ALL patients, 26 healthy donors) in the
    organisers' three folds: fold 0 2,397 all / 1,130 hem, fold 1 2,418 / 1,163, fold 2 2,457 /
    1,096; no subject appears in two folds. Preliminary test 1,867 (1,219 all / 648 hem).
    Final test 2,586, unlabelled (neither distribution ships its labels).

    Labels: ``classes = ("hem", "all")``, so label 1 = all as in the organisers' CSV. The class
    folder of a training image must agree with its file-name suffix. Final-test records are
    :data:`~leukemia_wbc.data.base.UNLABELLED`.

    Groups: the subject id from the file name (``UID_H10_...`` -> ``"H10"``, ``UID_11_...`` ->
    ``"11"``); the release's one lower-case id ``h3`` is read as ``"H3"``. Ids prefixed ``H``
    are healthy donors (see :func:`subject_is_healthy`). Preliminary-test groups come from the
    CSV's ``Patient_ID``. Final-test images have no known subject: each is its own group
    ``"final:<N>"``.

    Args:
        root: The dataset folder or any folder above it.
        split: ``"train"`` (the three training folds), ``"prelim_test"`` (labelled by the CSV)
            or ``"final_test"`` (unlabelled).
        folds: With ``split="train"``, the organisers' folds to keep (default: all found).
        size: Output size (int for a square, or ``(height, width)``); ``None`` keeps 450x450.
        on_error: ``"raise"`` or ``"skip"`` unreadable images (see :class:`WBCDataset`).
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: A folder or the labels CSV of the split is missing, or the CSV names
            an image that does not exist.
        ValueError: Unknown ``split``; ``folds`` with a test split; a fold number not found on
            disk; several copies of a folder under ``root``; a file name that does not follow the
            naming; a class folder that disagrees with the file-name suffix; a malformed CSV, or
            an image that has no row in it.
    """

    classes: tuple[str, ...] = _CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: Literal["train", "prelim_test", "final_test"] = "train",
        folds: Sequence[int] | None = None,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        root_path = Path(root)
        if split not in _SPLITS:
            raise ValueError(f"{_DATASET}: split {split!r}; expected one of {_SPLITS}")
        if folds is not None and split != "train":
            raise ValueError(
                f"{_DATASET}: folds={list(folds)} given with split={split!r}; folds select "
                "training folds and apply to split='train' only"
            )
        require_dir(root_path, _DATASET, _LAYOUT)
        found = _Found(root_path)
        if split == "train":
            records = _training_records(found, folds, root_path)
        elif split == "prelim_test":
            image_dir = _only(found.prelim, f"image folder {_PRELIM_DIR}", root_path)
            records = _prelim_records(image_dir, _only(found.csvs, _CSV_NAME, root_path))
        else:
            image_dir = _only(found.final, f"image folder {_FINAL_DIR}", root_path)
            images = sorted(list_images(image_dir), key=_number_key)
            records = [Record(str(p), UNLABELLED, f"final:{p.stem}") for p in images]
        super().__init__(
            records, _CLASSES, size=size, on_error=on_error, pixels_per_um=pixels_per_um
        )
        self.root: Path = root_path
        self.split: Literal["train", "prelim_test", "final_test"] = split
        self._fold_of: dict[str, int] = {}
        for rec in self.records:
            fold = _FOLD.fullmatch(Path(rec.path).parent.parent.name)
            if split == "train" and fold is not None:
                self._fold_of[rec.path] = int(fold[1])

    @property
    def fold_ids(self) -> np.ndarray:
        """The organisers' fold of each record (``int64``; -1 for the test splits).

        Stays aligned with the records after :meth:`subset`.
        """
        return np.fromiter(
            (self._fold_of.get(r.path, -1) for r in self.records),
            dtype=np.int64,
            count=len(self.records),
        )
