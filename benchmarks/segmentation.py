"""Classical nucleus segmentation: speed and Dice against a plain scikit-image reference.

The reference is what a user would write in a few lines with scikit-image, one image at a
time: the three-class Otsu thresholds of the green channel (the nucleus below the lower one),
an opening by a disk of radius 2, hole filling and the connected component at the image centre
(the one nearest to it when none covers it). It is run on the same images in the same process
as :class:`~leukemia_wbc.models.ClassicalNucleusSegmenter`, so the speed ratio does not depend
on the machine's load as the absolute figures do.

* speed: milliseconds per image on ``--n`` real single-cell crops (default 64) at ``--size``
  (default 224), CPU with 2 threads; the library segments the crops as one batch, the reference
  loops over them; median of ``--repeats`` runs;
* Dice: mean per-image Dice against the expert nucleus masks of both labs of
  ``../shared/data/segmentation_WBC`` (Dataset 1: 300 images, Dataset 2: 100), every method.

Run: ``python benchmarks/segmentation.py [--n 64] [--size 224] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, append_record, median_seconds, table

from leukemia_wbc.models.segmentation import ClassicalNucleusSegmenter

METHODS = ("multiotsu_blue_green", "kmeans", "multiotsu_darkness")


def real_cells(size: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """segmentation_WBC's images (uint8), expert nucleus masks (bool) and lab of each."""
    from leukemia_wbc.data import SegmentationWBC2018

    ds = SegmentationWBC2018(SHARED_DATA / "segmentation_WBC", size=size)
    samples = [ds[i] for i in range(len(ds))]
    images = torch.stack([s["image"] for s in samples])
    masks = torch.stack([s["mask"] for s in samples])[:, 0].numpy() > 0
    labs = np.array([r.group.split("/", 1)[0] for r in ds.records])
    return images, masks, labs


def reference(image: np.ndarray) -> np.ndarray:
    """The plain scikit-image segmentation of one ``(3, H, W)`` uint8 image."""
    import skimage.filters
    import skimage.morphology
    from scipy import ndimage as ndi

    green = image[1]
    low = skimage.filters.threshold_multiotsu(green, classes=3)[0]
    mask = skimage.morphology.opening(green < low, skimage.morphology.disk(2))
    mask = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(mask)
    if n == 0:
        return np.asarray(mask, dtype=bool)
    cy, cx = (s // 2 for s in labels.shape)
    label = labels[cy, cx]
    if label == 0:  # the component nearest the centre
        _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
        label = labels[iy[cy, cx], ix[cy, cx]]
    return np.asarray(labels == label)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & truth).sum()) / total


def library(method: str, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The library's masks of ``images`` (bool ``(N, H, W)``), batch by batch."""
    seg = ClassicalNucleusSegmenter(method)  # type: ignore[arg-type]
    parts = [seg(images[i : i + batch])[:, 0] for i in range(0, len(images), batch)]
    return torch.cat(parts).numpy() > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="images timed")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    images, masks, labs = real_cells(args.size)
    timed = images[: args.n]
    ref_s = median_seconds(lambda: [reference(im) for im in timed.numpy()], args.repeats, "cpu")
    speed: dict[str, Any] = {"reference_ms": 1e3 * ref_s / len(timed)}
    for method in METHODS:
        seg = ClassicalNucleusSegmenter(method)  # type: ignore[arg-type]
        seconds = median_seconds(lambda seg=seg: seg(timed), args.repeats, "cpu")
        speed[f"{method}_ms"] = 1e3 * seconds / len(timed)
        speed[f"{method}_speedup"] = ref_s / seconds
    quality: dict[str, dict[str, float]] = {}
    predictions = {"reference": np.stack([reference(im) for im in images.numpy()])}
    predictions |= {m: library(m, images) for m in METHODS}
    for name, pred in predictions.items():
        scores = np.array([dice(p, t) for p, t in zip(pred, masks, strict=True)])
        quality[name] = {lab: float(scores[labs == lab].mean()) for lab in sorted(set(labs))}
    rows = [["method", "ms / image", "x reference", *sorted(set(labs))]]
    rows.append(["scikit-image reference", f"{speed['reference_ms']:.2f}", "1.0",
                 *(f"{v:.3f}" for v in quality["reference"].values())])  # fmt: skip
    for m in METHODS:
        rows.append([m, f"{speed[f'{m}_ms']:.2f}", f"{speed[f'{m}_speedup']:.1f}",
                     *(f"{v:.3f}" for v in quality[m].values())])  # fmt: skip
    print(f"{args.n} images at {args.size} px timed (CPU, 2 threads, median of {args.repeats}); "
          f"Dice on all {len(images)} images against the expert masks")  # fmt: skip
    print(table([tuple(r) for r in rows[1:]], tuple(rows[0])))
    path = append_record("segmentation", {"n": args.n, "size": args.size, "speed": speed,
                                          "dice": quality})  # fmt: skip
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
