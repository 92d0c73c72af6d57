"""Raabin-WBC: cropped single white blood cells of five normal types."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from ._files import require_dir
from .base import Record, WBCDataset
from .folder import scan_class_folders

__all__ = ["RAABIN_CLASSES", "RAABIN_SPLITS", "RaabinSplit", "RaabinWBC"]

#: A split folder of the Raabin-WBC cropped-cell release.
RaabinSplit = Literal["Train", "TestA", "TestB"]

#: The split folders, in the order of the release.
RAABIN_SPLITS: tuple[str, ...] = get_args(RaabinSplit)

#: Class names (label order), as the class folders are named in the release.
RAABIN_CLASSES: tuple[str, ...] = ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")

_LAYOUT = "<root>/{Train,TestA,TestB}/{Basophil,Eosinophil,Lymphocyte,Monocyte,Neutrophil}/<images>"


class RaabinWBC(WBCDataset):
    """Raabin-WBC cropped single-cell images, five classes of normal white blood cells.

    Source: Raabin Health Database, https://raabindata.com/free-data/ (the cropped-cell
    archives ``Train``, ``TestA`` and ``TestB``).

    Layout (folder names matched ignoring case)::

        root/Train/{Basophil,Eosinophil,Lymphocyte,Monocyte,Neutrophil}/<image>.jpg
        root/TestA/<same class folders>/...
        root/TestB/<same class folders>/...

    A split may lack a class folder (that class then has no samples there); ``classes`` is
    always the five names above, so label indices agree across splits. Any other folder in a
    split is an error. Groups: the release's file names carry no documented smear or patient
    id, so each image is its own group (its file stem).

    Licence: CC BY-SA 4.0 (as published with the article).

    Citation: Z. M. Kouzehkanan et al., "A large dataset of white blood cells containing cell
    locations and types, along with segmented nuclei and cytoplasm", Scientific Reports 12,
    1123 (2022), doi:10.1038/s41598-021-04426-x.

    Args:
        root: Folder holding the split folders.
        split: One split or several (concatenated in the order given).
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: ``root`` or a split folder is missing, or a split has no class
            folder.
        ValueError: An unknown or repeated split name, or a folder in a split that is not one
            of the five classes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: RaabinSplit | Sequence[RaabinSplit] = "Train",
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        self.root = require_dir(Path(root), "RaabinWBC", _LAYOUT)
        splits: list[str] = [split] if isinstance(split, str) else list(split)
        bad = [s for s in splits if s not in RAABIN_SPLITS]
        if bad or not splits or len(set(splits)) != len(splits):
            raise ValueError(
                f"RaabinWBC: split {split!r} is not valid; expected one or more distinct names "
                f"of {RAABIN_SPLITS}"
            )
        self.splits: tuple[str, ...] = tuple(splits)
        folders = {p.name.casefold(): p for p in self.root.iterdir() if p.is_dir()}
        records: list[Record] = []
        for name in splits:
            level = folders.get(name.casefold())
            if level is None:
                raise FileNotFoundError(
                    f"RaabinWBC: split folder {self.root / name} not found; expected {_LAYOUT}"
                )
            _, items = scan_class_folders(
                level,
                RAABIN_CLASSES,
                dataset=f"RaabinWBC ({name})",
                case_insensitive=True,
                require_all=False,
            )
            records.extend(Record(str(p), label, p.stem) for p, label in items)
        super().__init__(
            records, RAABIN_CLASSES, size=size, on_error=on_error, pixels_per_um=pixels_per_um
        )

    @property
    def sources(self) -> list[str]:
        """Per-sample split name (``"Train"``, ``"TestA"`` or ``"TestB"``), from the path."""
        canonical = {s.casefold(): s for s in RAABIN_SPLITS}
        return [canonical[Path(r.path).parent.parent.name.casefold()] for r in self.records]
