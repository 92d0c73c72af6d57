#!/usr/bin/env python3
"""Write a tiny fake ALL-IDB in the dataset's exact on-disk layout (seeded).

Writes under the output folder:

* ``ALL_IDB2/img/ImNNN_Y.tif``: 6 RGB crops of 16x16 (the real ones are 257x257), 3 blasts
  ``Im001_1``-``Im003_1`` and 3 normal ``Im004_0``-``Im006_0`` (more with ``min_per_class``);
* ``ALL_IDB2_masks/ImNNN_Y.*``: one nucleus mask per crop, in the published RGB colour code
  (nucleus cyan, cytoplasm blue, background white) as PNG, except ``Im002_1.tif`` (an 8-bit
  binary mask, 0 / 255); left out with ``masks=False`` (the release itself has no masks: they
  are a separate, third-party annotation);
* ``ALL_IDB1/im/ImNNN_Y.jpg``: 4 smears of 64x48 (real: 2592x1944) and ``ALL_IDB1/xyc``: the
  blast centroids of ``Im001_1`` (3) and ``Im002_1`` (2), an empty ``Im004_0.xyc``, none for
  ``Im003_0``.

Usage: ``python data.py OUT_DIR [--no-masks]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
CROP = 16
SMEAR = (64, 48)  # width, height
IDB2 = ["Im001_1", "Im002_1", "Im003_1", "Im004_0", "Im005_0", "Im006_0"]
GREY_MASK = "Im002_1"
IDB1 = ["Im001_1", "Im002_1", "Im003_0", "Im004_0"]
#: Blast centroids ``(x, y)`` in pixels of the 64x48 smear.
CENTROIDS = {"Im001_1": [(10, 12), (40, 30), (55, 8)], "Im002_1": [(20, 20), (32, 40)]}


def _colour_mask(rng: np.random.Generator) -> np.ndarray:
    """A white mask with a blue cell disc around a cyan nucleus disc."""
    yy, xx = np.mgrid[:CROP, :CROP]
    cy, cx = rng.integers(6, CROP - 6, 2)
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    out = np.full((CROP, CROP, 3), 255, np.uint8)
    out[r2 <= 25] = (0, 0, 255)
    out[r2 <= 6] = (0, 255, 255)
    return out


def _write_crop(stem: str, rng: np.random.Generator, img_dir: Path, mask_dir: Path | None) -> None:
    """One ALL-IDB2 crop and (``mask_dir``) its mask; the same draws with or without the mask."""
    pixels = rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(img_dir / f"{stem}.tif")
    mask = _colour_mask(rng)
    if mask_dir is None:
        return
    if stem == GREY_MASK:
        grey = np.where((mask == (0, 255, 255)).all(axis=2), 255, 0).astype(np.uint8)
        Image.fromarray(grey).save(mask_dir / f"{stem}.tif")
    else:
        Image.fromarray(mask).save(mask_dir / f"{stem}.png")


def make(root: Path, *, masks: bool = True, min_per_class: int = 0) -> Path:
    """Write the fake ALL-IDB1 and ALL-IDB2 (with or without masks) under ``root``.

    Args:
        root: Output folder (created if needed).
        masks: Also write ``ALL_IDB2_masks`` (the images are the same either way).
        min_per_class: Write at least this many ALL-IDB2 crops of each class: the extra ones,
            ``Im007_1``, ``Im008_0``, ... (colour-coded masks), come after the files above,
            which stay the same.

    Returns:
        ``root``, the folder holding ``ALL_IDB1``, ``ALL_IDB2`` and (``masks``) ``ALL_IDB2_masks``.
    """
    root = Path(root)
    rng = np.random.default_rng(SEED)
    img_dir, mask_dir = root / "ALL_IDB2" / "img", root / "ALL_IDB2_masks"
    im_dir, xyc_dir = root / "ALL_IDB1" / "im", root / "ALL_IDB1" / "xyc"
    for d in (img_dir, im_dir, xyc_dir, *([mask_dir] if masks else [])):
        d.mkdir(parents=True, exist_ok=True)
    for stem in IDB2:
        _write_crop(stem, rng, img_dir, mask_dir if masks else None)
    for stem in IDB1:
        pixels = rng.integers(0, 256, (SMEAR[1], SMEAR[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(im_dir / f"{stem}.jpg", quality=90)
        if stem in CENTROIDS:
            lines = "".join(f"{x} {y}\n" for x, y in CENTROIDS[stem])
            (xyc_dir / f"{stem}.xyc").write_text(lines)
        elif stem == "Im004_0":
            (xyc_dir / f"{stem}.xyc").write_text("")
    extra = np.random.default_rng([SEED, 1])
    per_class = {y: sum(s.endswith(f"_{y}") for s in IDB2) for y in (1, 0)}
    number = len(IDB2)
    while any(n < min_per_class for n in per_class.values()):
        label = min(per_class, key=lambda y: (per_class[y], -y))
        number += 1
        _write_crop(f"Im{number:03d}_{label}", extra, img_dir, mask_dir if masks else None)
        per_class[label] += 1
    return root


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--no-masks"]):
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR [--no-masks]")
    print(make(Path(sys.argv[1]), masks=sys.argv[2:] != ["--no-masks"]))
