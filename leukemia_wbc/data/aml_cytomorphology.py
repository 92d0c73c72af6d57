"""AML-Cytomorphology_LMU: single white blood cells of AML patients and controls (Matek 2019)."""

from __future__ import annotations

import os
from typing import Literal

from .class_folders import ClassFolderWBC

__all__ = ["AML_CLASSES", "AML_CLASS_COUNTS", "AML_CLASS_NAMES", "AMLCytomorphology"]

#: Class folder abbreviation -> cell type, as defined by the dataset's authors.
AML_CLASS_NAMES: dict[str, str] = {
    "BAS": "basophil",
    "EBO": "erythroblast",
    "EOS": "eosinophil",
    "KSC": "smudge cell",
    "LYA": "lymphocyte (atypical)",
    "LYT": "lymphocyte (typical)",
    "MMZ": "metamyelocyte",
    "MOB": "monoblast",
    "MON": "monocyte",
    "MYB": "myelocyte",
    "MYO": "myeloblast",
    "NGB": "neutrophil (band)",
    "NGS": "neutrophil (segmented)",
    "PMB": "promyelocyte (bilobed)",
    "PMO": "promyelocyte",
}

#: Class names (label order): the folder abbreviations, sorted.
AML_CLASSES: tuple[str, ...] = tuple(sorted(AML_CLASS_NAMES))

#: Images per class as reported by Matek et al. (2019); they sum to 18,365.
AML_CLASS_COUNTS: dict[str, int] = {
    "BAS": 79,
    "EBO": 78,
    "EOS": 424,
    "KSC": 15,
    "LYA": 11,
    "LYT": 3937,
    "MMZ": 15,
    "MOB": 26,
    "MON": 1789,
    "MYB": 42,
    "MYO": 3268,
    "NGB": 109,
    "NGS": 8484,
    "PMB": 18,
    "PMO": 70,
}

_LAYOUT = "<root>/[AML-Cytomorphology/]{BAS,EBO,...,PMO}/<ABBR>_<NNNN>.tiff"


class AMLCytomorphology(ClassFolderWBC):
    """AML-Cytomorphology_LMU: 18,365 single-cell TIFF images (400x400), 15 classes.

    Source: The Cancer Imaging Archive, collection "AML-Cytomorphology_LMU",
    doi:10.7937/tcia.2019.36f5o9ld. Peripheral blood smears of patients with acute myeloid
    leukaemia and of controls, scanned at the Munich University Hospital; each cell was labelled
    by experts into one of the classes of :data:`AML_CLASS_NAMES` (sizes in
    :data:`AML_CLASS_COUNTS`). Myeloblasts (``MYO``) and monoblasts (``MOB``) are the blast
    classes that matter for AML.

    Layout: the class folders, named by their abbreviation (matched ignoring case), anywhere
    under ``root``, usually inside ``AML-Cytomorphology/``::

        root/AML-Cytomorphology/{BAS,EBO,EOS,...,PMO}/<ABBR>_<NNNN>.tiff

    Copies of the class folders nested inside one another are merged without duplicates, as
    for :class:`~leukemia_wbc.data.pbc.PBC`; any other folder next to the class folders is an
    error; non-image files there (such as an annotation file) are ignored. The TIFFs may carry
    an alpha channel, which is composited on white. Groups: the release does not link cells
    to patients, so each image is its own group (its file stem).

    Licence: CC BY 3.0 (TCIA).

    Citation: C. Matek, S. Schwarz, C. Marr, K. Spiekermann, "Human-level recognition of blast
    cells in acute myeloid leukaemia with convolutional neural networks", Nature Machine
    Intelligence 1, 538-544 (2019), doi:10.1038/s42256-019-0101-9.

    Args:
        root: Folder under which the class folders lie.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: ``root`` is missing, or no class folder (or not all 15) is found.
        ValueError: A folder next to the class folders that is not a class.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        size: int | tuple[int, int] | None = 224,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> None:
        super().__init__(
            root,
            classes=AML_CLASSES,
            nested=True,
            case_insensitive=True,
            layout=_LAYOUT,
            size=size,
            on_error=on_error,
            pixels_per_um=pixels_per_um,
        )
