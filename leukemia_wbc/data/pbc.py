"""PBC: peripheral blood cells of healthy donors, eight classes (Acevedo et al. 2020)."""

from __future__ import annotations

import os
from typing import Literal

from .class_folders import ClassFolderWBC

__all__ = ["PBC", "PBC_CLASSES", "PBC_CLASS_COUNTS"]

#: Class names (label order), as the class folders are named in the release.
PBC_CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

#: Images per class in the published release (they sum to 17,092); ``ig`` is immature
#: granulocytes (promyelocytes, myelocytes and metamyelocytes).
PBC_CLASS_COUNTS: dict[str, int] = {
    "basophil": 1218,
    "eosinophil": 3117,
    "erythroblast": 1551,
    "ig": 2895,
    "lymphocyte": 1214,
    "monocyte": 1420,
    "neutrophil": 3329,
    "platelet": 2348,
}

_LAYOUT = "<root>/.../{" + ",".join(PBC_CLASSES) + "}/<images>.jpg"


class PBC(ClassFolderWBC):
    """The PBC dataset: 17,092 JPEG images (360x363) of normal peripheral blood cells.

    Source: Mendeley Data, "PBC_dataset_normal_DIB", doi:10.17632/snkd93bnjr.1. Images were
    taken with a CellaVision DM96 analyser from smears of individuals without infection,
    haematologic or oncologic disease; see :data:`PBC_CLASS_COUNTS` for the class sizes.

    Layout: the eight class folders, found anywhere under ``root`` (names matched ignoring
    case); the archive usually unpacks doubly nested::

        root/PBC_dataset_normal_DIB/PBC_dataset_normal_DIB/{basophil,...,platelet}/<image>.jpg

    When the class folders appear more than once (a copy unpacked inside another), the copies
    are merged without duplicates: images are identified by file name within their class, and
    each is taken from the copy with the most images (ties: the deepest copy, then the first
    by path); see :func:`~leukemia_wbc.data.class_folders.scan_class_folders`. Any other
    folder next to the class folders is an error. Groups: the release links no image to a
    donor, so each image is its own group (its file stem).

    Licence: CC BY 4.0.

    Citation: A. Acevedo, A. Merino, S. Alferez, A. Molina, L. Boldu, J. Rodellar, "A dataset
    of microscopic peripheral blood cell images for development of automatic recognition
    systems", Data in Brief 30, 105474 (2020), doi:10.1016/j.dib.2020.105474.

    Args:
        root: Folder under which the class folders lie.
        size: Output size, see :class:`~leukemia_wbc.data.base.WBCDataset`.
        on_error: ``"raise"`` or ``"skip"`` unreadable files.
        pixels_per_um: Pixel size of the images in pixels per micrometre (of the microscope
            and camera that took them), for resampling to a common physical scale
            (:meth:`~leukemia_wbc.data.WBCDataset.with_scale`); ``None``: not known.

    Raises:
        FileNotFoundError: ``root`` is missing, or no class folder (or not all eight) is found.
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
            classes=PBC_CLASSES,
            nested=True,
            case_insensitive=True,
            layout=_LAYOUT,
            size=size,
            on_error=on_error,
            pixels_per_um=pixels_per_um,
        )
