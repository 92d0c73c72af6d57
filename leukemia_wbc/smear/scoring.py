"""Mask average precision of white-cell detectors on annotated smears, side by side."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from torchmetrics.detection import MeanAveragePrecision
from tqdm.auto import tqdm

from .detectors import CellDetector

__all__ = ["DetectorScore", "compare_detectors", "detector_table"]

_KEYS = ("map", "map_50", "map_75", "mar_100")


@dataclass(frozen=True)
class DetectorScore:
    """Mask AP of one detector on all cells and on the overlapping-cell subset.

    Attributes:
        name: The detector's name.
        all: ``map``, ``map_50``, ``map_75`` and ``mar_100`` over every white cell.
        overlapping: The same over the cells that touch or overlap another white cell (the
            others count as "crowd" regions: detecting them is neither a hit nor a miss).
        seconds_per_image: Mean detection time per image.
        n_images: Images evaluated.
        n_cells: White cells, and ``n_overlapping`` of them overlapping.
        n_overlapping: Overlapping white cells.
    """

    name: str
    all: dict[str, float]
    overlapping: dict[str, float]
    seconds_per_image: float
    n_images: int
    n_cells: int
    n_overlapping: int


def _summary(metric: MeanAveragePrecision) -> dict[str, float]:
    """The metric's figures; its -1 ("undefined": no detection at all) becomes 0."""
    result = metric.compute()
    return {k: max(float(result[k]), 0.0) for k in _KEYS}


def compare_detectors(
    detectors: Mapping[str, CellDetector],
    dataset: Dataset[dict[str, Any]],
    *,
    indices: Sequence[int] | None = None,
    progress: bool = True,
) -> list[DetectorScore]:
    """Mask AP (COCO, IoU 0.5:0.95) of each detector on the annotated images of ``dataset``.

    Every detector sees the same images. Masks are compared as nucleus instance masks, class
    agnostic (every white cell is one class). The overlapping subset uses the samples'
    ``overlapping`` flags. A detector that finds nothing at all scores 0 (torchmetrics reports
    -1, "undefined", in that case).

    Args:
        detectors: Name to detector.
        dataset: Samples with ``image``, ``masks`` (instance masks) and ``overlapping`` (e.g.
            :class:`~leukemia_wbc.smear.SyntheticSmear`).
        indices: Samples to use (default all).
        progress: Show a progress bar.

    Returns:
        One :class:`DetectorScore` per detector, in the order given.

    Raises:
        ValueError: No detector, or a sample without ``masks`` or ``overlapping``.
    """
    if not detectors:
        raise ValueError("detectors is empty: pass at least one name -> detector")
    chosen = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
    metrics = {
        name: (MeanAveragePrecision(iou_type="segm"), MeanAveragePrecision(iou_type="segm"))
        for name in detectors
    }
    seconds = dict.fromkeys(detectors, 0.0)
    n_cells = n_overlapping = 0
    for index in tqdm(chosen, desc="detecting", disable=not progress, unit="image"):
        sample = dataset[index]
        missing = {"image", "masks", "overlapping"} - set(sample)
        if missing:
            raise ValueError(f"sample {index} lacks {sorted(missing)}; expected an annotated smear")
        masks = sample["masks"].bool()
        overlapping = sample["overlapping"].bool()
        ones = torch.ones(len(masks), dtype=torch.long)
        truth = [{"masks": masks, "labels": ones}]
        subset = [{"masks": masks, "labels": ones, "iscrowd": (~overlapping).long()}]
        n_cells += len(masks)
        n_overlapping += int(overlapping.sum())
        for name, detect in detectors.items():
            start = time.perf_counter()
            found = detect(sample["image"])
            seconds[name] += time.perf_counter() - start
            found = found.to("cpu")
            pred = [
                {
                    "masks": found.masks,
                    "scores": found.scores,
                    "labels": torch.ones_like(found.labels),
                }
            ]
            metrics[name][0].update(pred, truth)
            metrics[name][1].update(pred, subset)
    return [
        DetectorScore(
            name=name,
            all=_summary(metrics[name][0]),
            overlapping=_summary(metrics[name][1]),
            seconds_per_image=seconds[name] / max(len(chosen), 1),
            n_images=len(chosen),
            n_cells=n_cells,
            n_overlapping=n_overlapping,
        )
        for name in detectors
    ]


def detector_table(scores: Sequence[DetectorScore]) -> str:
    """A Markdown table of :func:`compare_detectors`'s scores.

    Args:
        scores: The scores.

    Returns:
        The table, one row per detector.
    """
    head = (
        "| detector | mask AP | AP50 | AP75 | AR100 | AP overlapping | AP50 overlapping "
        "| s/image |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [
        f"| {s.name} | {s.all['map']:.3f} | {s.all['map_50']:.3f} | {s.all['map_75']:.3f} | "
        f"{s.all['mar_100']:.3f} | {s.overlapping['map']:.3f} | {s.overlapping['map_50']:.3f} | "
        f"{s.seconds_per_image:.3f} |"
        for s in scores
    ]
    return "\n".join([head, *rows])
