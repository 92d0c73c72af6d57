#!/usr/bin/env python3
"""Write a tiny fake AML-Cytomorphology_LMU tree in the real layout (seeded, deterministic).

Layout: ``AML-Cytomorphology/<ABBR>/<ABBR>_<NNNN>.tiff`` for the 15 class abbreviations, as RGBA
TIFFs (exercising alpha compositing), plus a non-image file (``annotations.dat``, a stand-in
for any text file shipped beside the class folders), which the loader must ignore.

Usage: ``python data.py OUT_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
CLASSES = (
    "BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB",
    "MON", "MYB", "MYO", "NGB", "NGS", "PMB", "PMO",
)  # fmt: skip
#: Images per class: 1 for the rare classes, more for the common ones.
COUNTS = {name: 1 for name in CLASSES} | {"LYT": 3, "MON": 2, "MYO": 3, "NGS": 4}


def make(root: Path) -> Path:
    """Write the fixture under ``root`` and return the dataset root (``root/aml``)."""
    rng = np.random.default_rng(SEED)
    out = Path(root) / "aml"
    level = out / "AML-Cytomorphology"
    for name in CLASSES:
        (level / name).mkdir(parents=True, exist_ok=True)
        for i in range(COUNTS[name]):
            pixels = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
            pixels[..., 3] = 255
            Image.fromarray(pixels, "RGBA").save(level / name / f"{name}_{i + 1:04d}.tiff")
    (level / "annotations.dat").write_text("not an image\n")
    return out


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
