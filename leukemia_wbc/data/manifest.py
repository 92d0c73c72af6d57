"""CSV-manifest datasets: one row per sample, read by :class:`ManifestWBC`.

:func:`write_manifest` writes such a file; paths in it are relative to its folder, so the
folder can be moved.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from .base import UNLABELLED, Record, WBCDataset

__all__ = ["MANIFEST_COLUMNS", "ManifestWBC", "write_manifest"]

_log = logging.getLogger(__name__)

#: Columns of a manifest CSV, in the order :func:`write_manifest` writes them; ``path`` and
#: ``label`` are required, ``group`` and ``mask`` optional.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "group", "mask")


class ManifestWBC(WBCDataset):
    """Images listed in a CSV manifest, one row per sample.

    Source, licence and citation are those of the images the manifest lists.

    Layout: a CSV file (UTF-8, optional byte-order mark) with the header
    ``path,label[,group][,mask]`` (other columns are ignored), e.g.::

        path,label,group,mask
        cells/a.png,lymphocyte,patient_1,masks/a.png

    ``path`` and ``mask`` are relative to the CSV's folder or absolute; ``label`` is a class
    name (empty: unlabelled); an empty or absent ``group`` is the file stem; an empty or absent
    ``mask`` means no mask. Each image file is listed once (paths are compared resolved): a
    row that repeats another exactly (same label, group and mask) is dropped with a logged
    warning; one that gives the same file another label, group or mask is an error, since the
    image could then sit in training and test at once.

    Args:
        csv_path: The manifest file.
        classes: Class names in label order; default: the sorted distinct labels.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: The manifest, or an image or mask it names, does not exist.
        ValueError: A required column is missing, a path is empty, a label is not one of
            ``classes``, an image is listed twice with different labels, groups or masks
            (the message names both lines), or the manifest has no rows.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        *,
        classes: Sequence[str] | None = None,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        rows = _read_manifest(self.csv_path)
        names = (
            tuple(classes)
            if classes is not None
            else tuple(sorted({label for _, _, label, _, _ in rows if label}))
        )
        index = {name: i for i, name in enumerate(names)}
        records = []
        for line, path, label, group, mask in rows:
            if label and label not in index:
                raise ValueError(
                    f"{self.csv_path}: line {line}: label {label!r} is not one of the classes "
                    f"{names}"
                )
            records.append(Record(str(path), index[label] if label else UNLABELLED, group, mask))
        super().__init__(records, names, size=size, on_error=on_error, pixels_per_um=pixels_per_um)


def _manifest_file(csv_path: Path, line: int, column: str, value: str | None) -> Path | None:
    """The existing file a manifest cell names (``None`` when the cell is empty)."""
    value = (value or "").strip()
    if not value:
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else csv_path.parent / p
    if not p.is_file():
        raise FileNotFoundError(
            f"{csv_path}: line {line}: {'image' if column == 'path' else column} {p} does not "
            "exist; expected paths "
            f"relative to {csv_path.parent} or absolute"
        )
    return p


def _read_manifest(csv_path: Path) -> list[tuple[int, Path, str, str, str | None]]:
    """Rows ``(line, image path, label, group, mask path)`` of a manifest, checked.

    A file listed twice with the same label, group and mask is kept once (a logged warning); a
    file listed twice with anything different is an error (see :func:`_merge_duplicates`).
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: manifest not found; expected a CSV file")
    rows: list[tuple[int, Path, str, str, str | None]] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {missing} in header {header}; expected the "
                "header path,label[,group][,mask]"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            path = _manifest_file(csv_path, line, "path", row.get("path"))
            mask = _manifest_file(csv_path, line, "mask", row.get("mask"))
            if path is None:
                raise ValueError(f"{csv_path}: line {line}: empty path; expected an image file")
            group = (row.get("group") or "").strip() or path.stem
            label = (row.get("label") or "").strip()
            rows.append((line, path, label, group, None if mask is None else str(mask)))
    if not rows:
        raise ValueError(f"{csv_path}: the manifest has a header but no rows")
    return _merge_duplicates(csv_path, rows)


def _merge_duplicates(
    csv_path: Path, rows: list[tuple[int, Path, str, str, str | None]]
) -> list[tuple[int, Path, str, str, str | None]]:
    """The rows with each image file once (paths compared resolved: links, ``..``, ``./``).

    Raises:
        ValueError: One file on two rows that differ in label, group or mask (the same image
            could land in training and test, or under two labels).
    """
    seen: dict[Path, tuple[int, Path, str, str, str | None]] = {}
    kept: list[tuple[int, Path, str, str, str | None]] = []
    for row in rows:
        line, path, label, group, mask = row
        key = path.resolve()
        first = seen.setdefault(key, row)
        if first is row:
            kept.append(row)
            continue
        mask_key = None if mask is None else Path(mask).resolve()
        first_mask = None if first[4] is None else Path(first[4]).resolve()
        if (first[2], first[3], first_mask) != (label, group, mask_key):
            raise ValueError(
                f"{csv_path}: the image {key} is listed on line {first[0]} (label "
                f"{first[2]!r}, group {first[3]!r}, mask {first[4]}) and again on line {line} "
                f"(label {label!r}, group {group!r}, mask {mask}); expected each image once, "
                "so that it has one label and lands in one part of a split"
            )
        _log.warning(
            "%s: line %d repeats line %d (%s, same label, group and mask); the image is kept "
            "once", csv_path, line, first[0], key,
        )  # fmt: skip
    return kept


def write_manifest(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, str | os.PathLike[str] | None]],
) -> Path:
    """Write a manifest CSV that :class:`ManifestWBC` reads back.

    The columns ``path`` and ``label`` are always written, ``group`` and ``mask`` when any row
    has a value for them. Absolute file paths inside the manifest's folder are written relative
    to it (so the folder can be moved); other absolute paths stay absolute; relative paths are
    taken as relative to the manifest's folder and written unchanged, with ``/`` separators.

    Args:
        path: The CSV file to write (its folder is created).
        rows: One mapping per sample with keys among ``path`` (required), ``label`` (class
            name; ``None`` or empty for unlabelled), ``group`` and ``mask``.

    Returns:
        The path of the written file.

    Raises:
        ValueError: No rows, a row without ``path``, or a key outside :data:`MANIFEST_COLUMNS`.
    """
    out = Path(path)
    base = out.parent.resolve()
    table = [dict(r) for r in rows]
    if not table:
        raise ValueError(f"{out}: no rows to write; expected at least one sample")
    for i, row in enumerate(table):
        if not row.get("path") or set(row) - set(MANIFEST_COLUMNS):
            raise ValueError(
                f"{out}: row {i} has keys {sorted(row)}; expected a path and keys among "
                f"{MANIFEST_COLUMNS}"
            )
    columns = [
        c for c in MANIFEST_COLUMNS if c in ("path", "label") or any(r.get(c) for r in table)
    ]

    def cell(column: str, value: str | os.PathLike[str] | None) -> str:
        if value is None:
            return ""
        if column in ("path", "mask"):
            p = Path(value)
            if p.is_absolute() and p.resolve().is_relative_to(base):
                p = p.resolve().relative_to(base)
            return p.as_posix()
        return os.fspath(value)

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in table:
            writer.writerow([cell(c, row.get(c)) for c in columns])
    return out
