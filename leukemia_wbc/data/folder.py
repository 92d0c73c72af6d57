"""Class-folder and CSV-manifest datasets, and the class-folder scanner the real loaders share.

Every "one folder per class" dataset (Raabin-WBC, PBC, AML-Cytomorphology, BCCD crops, a user's
ImageFolder tree) is read by :func:`scan_class_folders`, which refuses folders it does not know
(never silently dropping one) and merges nested copies of the class folders.
:class:`ManifestWBC` reads a CSV list of files, which :func:`write_manifest` writes.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from ._files import is_image, list_images, require_dir
from .base import UNLABELLED, Record, WBCDataset

__all__ = [
    "BCCD_GROUP_PATTERN",
    "MANIFEST_COLUMNS",
    "ImageFolderWBC",
    "ManifestWBC",
    "find_class_levels",
    "scan_class_folders",
    "write_manifest",
]

#: ``group_pattern`` for the BCCD single-cell crops (``BloodImage_NNNNN_k.jpg``): the group is
#: the id ``NNNNN`` of the smear image the crop was cut from, so that crops of one smear image
#: are never split across training and evaluation.
BCCD_GROUP_PATTERN = r"^BloodImage_(\d+)_\d+$"

#: Columns of a manifest CSV, in the order :func:`write_manifest` writes them; ``path`` and
#: ``label`` are required, ``group`` and ``mask`` optional.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "group", "mask")

#: Folders that archive tools leave behind and that are never class folders.
_JUNK_DIRS = frozenset({"__MACOSX"})


def _is_skipped_dir(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _JUNK_DIRS


def _norm(name: str, case_insensitive: bool) -> str:
    return name.casefold() if case_insensitive else name


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_skipped_dir(p))


def find_class_levels(
    root: Path, names: Sequence[str], *, case_insensitive: bool = True
) -> list[Path]:
    """Folders under ``root`` (``root`` included) that hold at least one class folder.

    Use it when a distribution may nest its class folders under one or more wrapper folders
    (``PBC_dataset_normal_DIB/PBC_dataset_normal_DIB/basophil/...``). Hidden folders and
    ``__MACOSX`` are not searched.

    Args:
        root: Where to search.
        names: Class folder names.
        case_insensitive: Match the names ignoring case.

    Returns:
        The folders, sorted by path; empty when none holds a class folder.
    """
    wanted = {_norm(n, case_insensitive) for n in names}
    levels: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_skipped_dir(Path(d)))
        if any(_norm(d, case_insensitive) in wanted for d in dirnames):
            levels.append(Path(dirpath))
    return sorted(levels)


def _match_level(
    level: Path,
    classes: Sequence[str] | None,
    others: Sequence[Path],
    *,
    dataset: str,
    case_insensitive: bool,
) -> dict[str, Path]:
    """Map class name -> folder for one class level, rejecting any folder that is not a class."""
    known = None if classes is None else {_norm(c, case_insensitive): c for c in classes}
    stray = [p for p in level.iterdir() if p.is_file() and is_image(p)]
    if stray:
        raise ValueError(
            f"{dataset}: image file {stray[0]} lies directly in {level}; expected every image "
            "inside a class folder"
        )
    found: dict[str, Path] = {}
    for folder in _subdirs(level):
        if any(folder == o or folder in o.parents for o in others):
            continue  # a wrapper around another copy of the class folders
        if known is None:
            name = folder.name
        elif _norm(folder.name, case_insensitive) in known:
            name = known[_norm(folder.name, case_insensitive)]
        else:
            raise ValueError(
                f"{dataset}: folder {folder} is not one of the expected classes "
                f"{tuple(classes or ())}; remove or rename it, or pass the classes you want"
            )
        if name in found:
            raise ValueError(
                f"{dataset}: folders {found[name]} and {folder} both name class {name!r}; "
                "expected one folder per class"
            )
        found[name] = folder
    return found


def scan_class_folders(
    levels: Path | Sequence[Path],
    classes: Sequence[str] | None = None,
    *,
    dataset: str,
    recursive: bool = False,
    case_insensitive: bool = False,
    require_all: bool = True,
) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """List the images of a class-folder layout with their labels.

    A *class level* is a folder whose sub-folders are the classes. Every sub-folder must be a
    class (hidden folders and ``__MACOSX`` are skipped; files that are not images are ignored);
    an image lying directly in a class level is an error. Several class levels may be given
    when an archive holds more than one copy of the class folders, one nested in another: a
    sub-folder that contains another level is then allowed, and each class's images are merged
    by path relative to the class folder, taking each file from the copy with the most images
    (ties: the deepest copy, then the first by path), so no image appears twice.

    Args:
        levels: One class level, or several holding copies of the same classes.
        classes: Expected class names in label order; ``None`` takes the sorted names of the
            folders found.
        dataset: Dataset name used in error messages.
        recursive: Also list images in sub-folders of each class folder.
        case_insensitive: Match folder names to ``classes`` ignoring case.
        require_all: Raise when a class in ``classes`` has no folder; when ``False`` such a
            class simply has no samples.

    Returns:
        ``(classes, items)``: the class names, and ``(image path, label index)`` pairs sorted
        by label, then by path within the class folder.

    Raises:
        FileNotFoundError: A level is not a folder, no class folder was found, or (with
            ``require_all``) a class has no folder.
        ValueError: A folder that is not one of ``classes``, two folders naming one class, an
            image directly in a class level, or duplicate names in ``classes``.
    """
    level_list = [levels] if isinstance(levels, Path) else list(levels)
    if not level_list:
        raise FileNotFoundError(f"{dataset}: no folder holding class folders was given")
    for level in level_list:
        require_dir(level, dataset, "<root>/<class name>/<image files>")
    if classes is not None and len(set(classes)) != len(classes):
        raise ValueError(f"{dataset}: duplicate class names in {tuple(classes)}")
    copies: dict[str, list[Path]] = {}
    for level in level_list:
        others = [o for o in level_list if o != level]
        matched = _match_level(
            level, classes, others, dataset=dataset, case_insensitive=case_insensitive
        )
        for name, folder in matched.items():
            copies.setdefault(name, []).append(folder)
    where = ", ".join(str(p) for p in level_list)
    if not copies:
        raise FileNotFoundError(
            f"{dataset}: no class folder in {where}; expected <root>/<class name>/<image files>"
            + ("" if classes is None else f" with classes {tuple(classes)}")
        )
    names = tuple(sorted(copies)) if classes is None else tuple(classes)
    missing = [c for c in names if c not in copies]
    if missing and require_all:
        raise FileNotFoundError(
            f"{dataset}: no folder for class(es) {missing} in {where}; expected one folder per "
            f"class {names}"
        )
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        merged: dict[str, Path] = {}
        listed = [
            (folder, list_images(folder, recursive=recursive)) for folder in copies.get(name, [])
        ]
        listed.sort(key=lambda fl: (-len(fl[1]), -len(fl[0].parts), str(fl[0])))
        for folder, files in listed:
            for f in files:
                merged.setdefault(f.relative_to(folder).as_posix(), f)
        items.extend((merged[key], label) for key in sorted(merged))
    return names, items


def _stem_grouper(pattern: str | None) -> Callable[[Path], str]:
    """Group function: the file stem, or the first capture group of ``pattern`` on the stem."""
    if pattern is None:
        return lambda p: p.stem
    regex = re.compile(pattern)
    if regex.groups < 1:
        raise ValueError(
            f"group_pattern {pattern!r} has no capture group; expected one, e.g. (\\d+)"
        )

    def group(path: Path) -> str:
        match = regex.search(path.stem)
        if match is None or match.group(1) is None:
            raise ValueError(
                f"{path}: file stem {path.stem!r} does not match group_pattern {pattern!r}; "
                "expected every file name to carry its group"
            )
        return match.group(1)

    return group


class ImageFolderWBC(WBCDataset):
    """Single-cell images sorted into one folder per class (the torchvision ImageFolder layout).

    Source: any collection laid out as below, e.g. the BCCD single-WBC crops (BCCD dataset, MIT
    licence; cite Shenggan, "BCCD Dataset", https://github.com/Shenggan/BCCD_Dataset, 2017),
    read with ``group_pattern=BCCD_GROUP_PATTERN``. Licence and citation are those of the data
    you point it at.

    Layout::

        root/<class name>/<image>.{jpg,png,bmp,tif,...}

    Files in ``root`` that are not images (a README, a CSV) are ignored; hidden folders and
    ``__MACOSX`` are skipped; an image directly in ``root`` is an error.

    Args:
        root: Folder holding the class folders.
        classes: Class names in label order; default: the sorted folder names. A folder that is
            not one of them, or a class without a folder, is an error.
        group_pattern: Regular expression searched in each file stem; its first capture group
            is the sample's group (patient, subject or smear). Default: the file stem, i.e.
            each image its own group (files with equal stems share a group).
        recursive: Also take images in sub-folders of the class folders.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.

    Raises:
        FileNotFoundError: ``root`` or a class folder is missing.
        ValueError: An unexpected folder, a class folder without images, a stem that does not
            match ``group_pattern``, or a pattern without a capture group.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        classes: Sequence[str] | None = None,
        group_pattern: str | None = None,
        recursive: bool = False,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        self.root = Path(root)
        grouper = _stem_grouper(group_pattern)
        names, items = scan_class_folders(
            self.root, classes, dataset=type(self).__name__, recursive=recursive
        )
        found = {label for _, label in items}
        empty = [name for i, name in enumerate(names) if i not in found]
        if empty:
            hint = "" if recursive else " (recursive=True takes images in sub-folders)"
            raise ValueError(
                f"{type(self).__name__}: class folder(s) {empty} under {self.root} hold no "
                f"images{hint}; move a folder that is not a class (masks, extra data) out of the "
                "root"
            )
        records = [Record(str(p), label, grouper(p)) for p, label in items]
        super().__init__(records, names, size=size, on_error=on_error)


class ManifestWBC(WBCDataset):
    """Images listed in a CSV manifest, one row per sample.

    Source, licence and citation are those of the images the manifest lists.

    Layout: a CSV file (UTF-8, optional byte-order mark) with the header
    ``path,label[,group][,mask]`` (other columns are ignored), e.g.::

        path,label,group,mask
        cells/a.png,lymphocyte,patient_1,masks/a.png

    ``path`` and ``mask`` are relative to the CSV's folder or absolute; ``label`` is a class
    name (empty: unlabelled); an empty or absent ``group`` is the file stem; an empty or absent
    ``mask`` means no mask.

    Args:
        csv_path: The manifest file.
        classes: Class names in label order; default: the sorted distinct labels.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.

    Raises:
        FileNotFoundError: The manifest, or an image or mask it names, does not exist.
        ValueError: A required column is missing, a path is empty, a label is not one of
            ``classes``, or the manifest has no rows.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        *,
        classes: Sequence[str] | None = None,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
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
        super().__init__(records, names, size=size, on_error=on_error)


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
    """Rows ``(line, image path, label, group, mask path)`` of a manifest, checked."""
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
    return rows


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
