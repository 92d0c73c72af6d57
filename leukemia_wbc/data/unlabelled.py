"""Any folder of cell images without labels (:class:`UnlabelledImages`), for pretraining."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ._files import list_images, require_dir
from .base import UNLABELLED, Record, WBCDataset

__all__ = ["UnlabelledImages"]


class UnlabelledImages(WBCDataset):
    r"""Every image under a folder, without labels: what self-supervised pretraining reads.

    Source: any folder of single-cell crops (a lab's archive, the cells of a dataset without
    its labels). Licence and citation are those of the data you point it at.

    Layout::

        root/**/<image>.{jpg,png,bmp,tif,...}

    Several roots may be given (e.g. two labs' archives); each keeps its own groups.

    Hidden files are skipped. Every sample is :data:`~leukemia_wbc.data.UNLABELLED`; the
    dataset has no classes, so it serves pretraining (``leukemia-wbc pretrain``), not a
    classifier.

    Args:
        root: The folder, or several folders.
        group_by: How a sample's group (the unit that validation holds out whole) is named:
            ``"folder"`` (the image's folder, e.g. one folder per patient or smear) or
            ``"file"`` (each image its own group); with several roots, prefixed by the root.
        exclude: Regular expression searched in each path relative to ``root`` (with ``/``);
            matching files are left out (e.g. ``"_mask"`` or ``"\\.png$"`` for masks stored
            beside the images).
        recursive: Also take images in sub-folders.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: A root is not a folder.
        ValueError: No image is found, an unknown ``group_by``, or a bad ``exclude`` pattern.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        group_by: Literal["folder", "file"] = "folder",
        exclude: str | None = None,
        recursive: bool = True,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        if group_by not in ("folder", "file"):
            raise ValueError(f"argument 'group_by': expected 'folder' or 'file', got {group_by!r}")
        try:
            pattern = None if exclude is None else re.compile(exclude)
        except re.error as err:
            raise ValueError(
                f"argument 'exclude': {exclude!r} is not a valid pattern: {err}"
            ) from err
        roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
        if not roots:
            raise ValueError("argument 'root': no folder given")
        #: The folders read.
        self.roots = [
            require_dir(Path(r), "UnlabelledImages", "root/**/<image files>") for r in roots
        ]
        self.root = self.roots[0]
        records = []
        for folder in self.roots:
            prefix = f"{folder.name}/" if len(self.roots) > 1 else ""
            for path in list_images(folder, recursive=recursive):
                relative = path.relative_to(folder).as_posix()
                if pattern is not None and pattern.search(relative):
                    continue
                parent = path.parent.relative_to(folder).as_posix()
                group = relative if group_by == "file" else (parent or ".")
                records.append(Record(str(path), UNLABELLED, prefix + group))
        if not records:
            raise ValueError(
                f"UnlabelledImages: no image under {', '.join(map(str, self.roots))}"
                + (f" (after excluding {exclude!r})" if exclude else "")
                + ("" if recursive else "; pass recursive=True to search sub-folders")
            )
        super().__init__(records, (), size=size, on_error=on_error, pixels_per_um=pixels_per_um)
