#!/usr/bin/env python3
"""Write a tiny fake Raabin-WBC tree in the real layout (seeded, deterministic).

Layout: ``raabin/{Train,TestA,TestB}/{Basophil,Eosinophil,Lymphocyte,Monocyte,Neutrophil}/*.jpg``.
The real file names carry no documented smear id, so neutral names are used.

Usage: ``python data.py OUT_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
CLASSES = ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")
#: Images per class in each split.
COUNTS = {
    "Train": (2, 3, 4, 2, 5),
    "TestA": (1, 1, 2, 1, 3),
    "TestB": (1, 1, 1, 1, 2),
}


def make(root: Path, *, min_per_class: int = 0) -> Path:
    """Write the fixture under ``root`` and return the dataset root (``root/raabin``).

    Args:
        root: Output folder.
        min_per_class: Write at least this many images of every class in every split (3 lets
            a 3-fold stratified cross-validation put each class in every fold); 0 keeps
            ``COUNTS``.
    """
    rng = np.random.default_rng(SEED)
    out = Path(root) / "raabin"
    for split, counts in COUNTS.items():
        for name, n in zip(CLASSES, counts, strict=True):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(max(n, min_per_class)):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{split.lower()}_{name.lower()}_{i:03d}.jpg")
    return out


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
