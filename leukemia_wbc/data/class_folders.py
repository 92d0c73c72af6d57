"""Class-folder datasets: one folder per class, the images inside.

:func:`scan_class_folders` lists such a layout, refusing folders it does not know (never
silently dropping one) and merging nested copies of the class folders;
:func:`find_class_levels` finds where the class folders lie when an archive wraps them.
:class:`ClassFolderWBC` is the dataset base class built on them, shared by
:class:`~leukemia_wbc.data.ImageFolderWBC` (any user's tree), :class:`~leukemia_wbc.data.PBC`
and :class:`~leukemia_wbc.data.AMLCytomorphology`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ._files import is_image, list_images, require_dir
from .base import Record, WBCDataset

__all__ = ["CLASS_FOLDER_LAYOUT", "ClassFolderWBC", "find_class_levels", "scan_class_folders"]

#: The layout of a class-folder dataset, as error messages show it.
CLASS_FOLDER_LAYOUT = "<root>/<class name>/<image files>"

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
        require_dir(level, dataset, CLASS_FOLDER_LAYOUT)
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
            f"{dataset}: no class folder in {where}; expected {CLASS_FOLDER_LAYOUT}"
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


class ClassFolderWBC(WBCDataset):
    """Single-cell images sorted into one folder per class: the class-folder dataset base.

    The images of each class folder (see :func:`scan_class_folders`) become records labelled by
    that folder; the classes are a fixed list or the folder names. Subclasses fix the classes,
    the layout their errors show and where the class folders may lie, and override
    :meth:`group_of` when a file name carries the patient or smear.

    Source, licence and citation are those of the data it reads (each subclass names its own).

    Layout::

        root/<class name>/<image>.{jpg,png,bmp,tif,...}

    or, with ``nested``, the class folders anywhere under ``root``, copies merged without
    duplicates. Files that are not images are ignored; hidden folders and ``__MACOSX`` are
    skipped; an image directly next to the class folders is an error.

    Args:
        root: Folder holding the class folders (with ``nested``: any folder above them).
        classes: Class names in label order; ``None`` takes the sorted names of the folders
            found. A folder that is not one of them, or a class without a folder, is an error.
        nested: Find the class folders anywhere under ``root`` (needs ``classes``).
        case_insensitive: Match folder names to ``classes`` ignoring case.
        recursive: Also take images in sub-folders of the class folders.
        require_images: Raise when a class folder holds no image.
        layout: The expected layout, shown in error messages.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: ``root`` is missing, no class folder is found, or a class has no
            folder.
        ValueError: ``nested`` without ``classes``, a folder that is not a class, two folders
            naming one class, an image next to the class folders, or (with
            ``require_images``) a class folder without images.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        classes: Sequence[str] | None = None,
        nested: bool = False,
        case_insensitive: bool = False,
        recursive: bool = False,
        require_images: bool = False,
        layout: str = CLASS_FOLDER_LAYOUT,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        name = type(self).__name__
        self.root = require_dir(Path(root), name, layout)
        levels: list[Path] = [self.root]
        if nested:
            if classes is None:
                raise ValueError(f"{name}: nested=True needs the class names (classes=...)")
            levels = find_class_levels(self.root, classes, case_insensitive=case_insensitive)
            if not levels:
                raise FileNotFoundError(
                    f"{name}: no class folder under {self.root}; expected {layout}"
                )
        names, items = scan_class_folders(
            levels, classes, dataset=name, recursive=recursive, case_insensitive=case_insensitive
        )
        if require_images:
            found = {label for _, label in items}
            empty = [c for i, c in enumerate(names) if i not in found]
            if empty:
                hint = "" if recursive else " (recursive=True takes images in sub-folders)"
                raise ValueError(
                    f"{name}: class folder(s) {empty} under {self.root} hold no images{hint}; "
                    "move a folder that is not a class (masks, extra data) out of the root"
                )
        records = [Record(str(p), label, self.group_of(p)) for p, label in items]
        super().__init__(records, names, size=size, on_error=on_error, pixels_per_um=pixels_per_um)

    def group_of(self, path: Path) -> str:
        """The group (patient, subject or smear) of one image; by default its file stem.

        Override it where file names carry the group. It is called while the dataset is
        built, before :class:`WBCDataset` is initialised.

        Args:
            path: The image file.

        Returns:
            The group name: here, each image is its own group (files with equal stems share
            one).
        """
        return path.stem
