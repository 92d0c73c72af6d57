#!/usr/bin/env python3
"""Write a tiny fake segmentation_WBC tree in the real layout (seeded, deterministic).

Layout (as in https://github.com/zxaoyou/segmentation_WBC)::

    segmentation_WBC/Dataset 1/NNN.bmp, NNN.png   (mask: 0 background, 128 cytoplasm, 255 nucleus)
    segmentation_WBC/Dataset 2/NNN.bmp, NNN.png
    segmentation_WBC/Class Labels of Dataset 1.csv   header "image ID,class label"
    segmentation_WBC/Class Labels of Dataset 2.csv   header "image ID,class"

Usage: ``python data.py OUT_DIR``
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
#: dataset -> (image side in pixels, class code 1-5 of each image in id order)
DATASETS = {
    "Dataset 1": (12, (1, 2, 1, 3, 4, 2)),
    "Dataset 2": (20, (2, 1, 5, 3)),
}
HEADERS = {"Dataset 1": ("image ID", "class label"), "Dataset 2": ("image ID", "class")}


def _mask(side: int, rng: np.random.Generator) -> np.ndarray:
    """A disc of cytoplasm (128) around a smaller disc of nucleus (255) on 0."""
    yy, xx = np.mgrid[:side, :side]
    cy, cx = side / 2 + rng.uniform(-1, 1, 2)
    r = np.hypot(yy - cy, xx - cx)
    mask = np.zeros((side, side), np.uint8)
    mask[r < side * 0.4] = 128
    mask[r < side * 0.2] = 255
    return mask


def _extra_codes(min_per_class: int) -> tuple[int, ...]:
    """Class codes of the images added to ``Dataset 1`` so that every class has enough."""
    counts = {code: 0 for code in range(1, 6)}
    for _, codes in DATASETS.values():
        for code in codes:
            counts[code] += 1
    return tuple(c for c in counts for _ in range(min_per_class - counts[c]))


def _write(folder: Path, i: int, side: int, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f"{i:03d}.bmp")
    Image.fromarray(_mask(side, rng), "L").save(folder / f"{i:03d}.png")


def make(root: Path, *, min_per_class: int = 0) -> Path:
    """Write the fixture under ``root`` and return the dataset root (``segmentation_WBC``).

    Args:
        root: Output folder.
        min_per_class: Write at least this many images of every class: the extra ones are
            appended to ``Dataset 1`` (ids after ``DATASETS``; the listed files stay the same).
    """
    rng = np.random.default_rng(SEED)
    extra_rng = np.random.default_rng([SEED, 1])
    out = Path(root) / "segmentation_WBC"
    for name, (side, codes) in DATASETS.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, len(codes) + 1):
            _write(folder, i, side, rng)
        if name == "Dataset 1":
            extra = _extra_codes(min_per_class)
            for i in range(len(codes) + 1, len(codes) + len(extra) + 1):
                _write(folder, i, side, extra_rng)
            codes = codes + extra
        with (out / f"Class Labels of {name}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(HEADERS[name])
            writer.writerows((i, code) for i, code in enumerate(codes, start=1))
    return out


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
