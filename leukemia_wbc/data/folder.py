"""Any class-folder tree as a dataset (:class:`ImageFolderWBC`), and the CSV manifests.

:class:`ImageFolderWBC` reads the torchvision ImageFolder layout through the shared
:class:`~leukemia_wbc.data.class_folders.ClassFolderWBC` base; the manifest dataset and the
class-folder scanner are re-exported here from :mod:`~leukemia_wbc.data.manifest` and
:mod:`~leukemia_wbc.data.class_folders`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .class_folders import ClassFolderWBC, find_class_levels, scan_class_folders
from .manifest import MANIFEST_COLUMNS, ManifestWBC, write_manifest

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


class ImageFolderWBC(ClassFolderWBC):
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
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

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
        pixels_per_um: float | None = None,
    ) -> None:
        self._group_regex = None if group_pattern is None else re.compile(group_pattern)
        if self._group_regex is not None and self._group_regex.groups < 1:
            raise ValueError(
                f"group_pattern {group_pattern!r} has no capture group; expected one, e.g. (\\d+)"
            )
        super().__init__(
            root,
            classes=classes,
            recursive=recursive,
            require_images=True,
            size=size,
            on_error=on_error,
            pixels_per_um=pixels_per_um,
        )

    def group_of(self, path: Path) -> str:
        """The file stem, or the first capture group of ``group_pattern`` searched in it.

        Args:
            path: The image file.

        Returns:
            The group name.

        Raises:
            ValueError: The stem does not match ``group_pattern``.
        """
        if self._group_regex is None:
            return path.stem
        match = self._group_regex.search(path.stem)
        if match is None or match.group(1) is None:
            raise ValueError(
                f"{path}: file stem {path.stem!r} does not match group_pattern "
                f"{self._group_regex.pattern!r}; expected every file name to carry its group"
            )
        return match.group(1)
