#!/usr/bin/env python3
"""Write a tiny class-folder tree and a manifest CSV (seeded, deterministic).

Layout::

    wbc_folder/classes/<Class>/BloodImage_<smear>_<k>.jpg   (BCCD-crop naming; smears shared)
    wbc_folder/classes/README.txt                            (a non-image file, ignored)
    wbc_folder/masks/<stem>.png                              (binary nucleus masks, 0/255)
    wbc_folder/manifest.csv          header path,label,group,mask; paths relative to the CSV

Usage: ``python data.py OUT_DIR``
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
#: class -> file stems (``BloodImage_<smear>_<k>``); smears 00001 and 00002 hold several cells.
FILES = {
    "Eosinophil": ("BloodImage_00001_1", "BloodImage_00003_1"),
    "Lymphocyte": ("BloodImage_00001_2", "BloodImage_00004_1", "BloodImage_00005_1"),
    "Neutrophil": ("BloodImage_00002_1", "BloodImage_00002_2", "BloodImage_00006_1"),
}
#: Manifest rows: (class folder, stem, label written in the CSV, group written in the CSV).
MANIFEST = (
    ("Eosinophil", "BloodImage_00001_1", "Eosinophil", "patient_a"),
    ("Lymphocyte", "BloodImage_00004_1", "Lymphocyte", "patient_a"),
    ("Neutrophil", "BloodImage_00002_1", "Neutrophil", "patient_b"),
    ("Neutrophil", "BloodImage_00006_1", "Neutrophil", ""),
)


def make(root: Path, *, min_per_class: int = 0) -> Path:
    """Write the fixture under ``root`` and return the dataset root (``root/wbc_folder``).

    Args:
        root: Output folder.
        min_per_class: Write at least this many images of every class (3 lets a 3-fold
            stratified cross-validation put each class in every fold); the extra ones come
            from smears of their own (``BloodImage_001<class><k>_1``), after ``FILES``.
    """
    rng = np.random.default_rng(SEED)
    out = Path(root) / "wbc_folder"
    for c, (name, stems) in enumerate(FILES.items()):
        folder = out / "classes" / name
        folder.mkdir(parents=True, exist_ok=True)
        extra = tuple(f"BloodImage_001{c}{k}_1" for k in range(min_per_class - len(stems)))
        for stem in stems + extra:
            pixels = rng.integers(0, 256, (14, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{stem}.jpg")
    (out / "classes" / "README.txt").write_text("class folders of a tiny test fixture\n")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "label", "group", "mask"))
        for name, stem, label, group in MANIFEST:
            mask = np.zeros((14, 16), np.uint8)
            mask[4:10, 5:11] = 255
            Image.fromarray(mask, "L").save(out / "masks" / f"{stem}.png")
            writer.writerow((f"classes/{name}/{stem}.jpg", label, group, f"masks/{stem}.png"))
    return out


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
