#!/usr/bin/env python3
"""Write a tiny fake PBC tree in the real, doubly nested layout (seeded, deterministic).

Layout: ``PBC_dataset_normal_DIB/PBC_dataset_normal_DIB/<class>/<PREFIX>_<n>.jpg`` (the
archive as usually unpacked), plus an incomplete second copy of the class folders one level
up, ``PBC_dataset_normal_DIB/<class>/``, holding a subset of the same file names: the loader
must merge the copies without duplicating a sample.

Usage: ``python data.py OUT_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
#: class folder -> (file-name prefix, number of images)
CLASSES = {
    "basophil": ("BA", 2),
    "eosinophil": ("EO", 3),
    "erythroblast": ("ERB", 2),
    "ig": ("MY", 3),
    "lymphocyte": ("LY", 2),
    "monocyte": ("MO", 2),
    "neutrophil": ("SNE", 4),
    "platelet": ("PLATELET", 2),
}
#: Images per class in the outer, incomplete copy (the first file names of each class).
OUTER_COPY = 1


def make(root: Path, *, min_per_class: int = 0) -> Path:
    """Write the fixture under ``root`` and return the dataset root (``root/pbc``).

    Args:
        root: Output folder.
        min_per_class: Write at least this many images of every class (3 lets a 3-fold
            stratified cross-validation put each class in every fold); 0 keeps ``CLASSES``.
    """
    rng = np.random.default_rng(SEED)
    out = Path(root) / "pbc"
    outer = out / "PBC_dataset_normal_DIB"
    inner = outer / "PBC_dataset_normal_DIB"
    for name, (prefix, n) in CLASSES.items():
        for i in range(max(n, min_per_class)):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            img = Image.fromarray(pixels)
            file = f"{prefix}_{100 + i}.jpg"
            (inner / name).mkdir(parents=True, exist_ok=True)
            img.save(inner / name / file)
            if i < OUTER_COPY:
                (outer / name).mkdir(parents=True, exist_ok=True)
                img.save(outer / name / file)
    return out


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
