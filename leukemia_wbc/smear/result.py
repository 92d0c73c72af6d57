"""The result of analysing one smear: cells, classes, blast share, verdict, overlay."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from .detections import Detections
from .metrics import ACUTE_LEUKEMIA_BLAST_THRESHOLD, blast_share_interval
from .overlay import class_colours, draw_cells

__all__ = ["SmearAnalysis", "save_smear_overlay", "smear_overlay"]


@dataclass(frozen=True)
class SmearAnalysis:
    """The result of :meth:`SmearAnalyzer.analyze` for one smear.

    Attributes:
        image: The analysed image, ``uint8`` ``(H, W, 3)`` (after the analyzer's ``scale``).
        detections: The white cells found (on the CPU), at the analysed image's size.
        probabilities: ``float32`` ``(N, C)`` class probabilities of each cell.
        classes: The classifier's class names.
        blast_classes: The classes counted as blasts.
        scale: Factor from the original image's pixels to the analysed image's.
        confidence: Level of :attr:`blast_interval`.
        path: The image file, when analysed from one.
    """

    image: np.ndarray
    detections: Detections
    probabilities: Tensor
    classes: tuple[str, ...]
    blast_classes: tuple[str, ...]
    scale: float
    confidence: float
    path: str | None = None

    @property
    def predicted(self) -> list[str]:
        """The predicted class of each cell."""
        return [self.classes[int(i)] for i in self.probabilities.argmax(1)] if len(self) else []

    def __len__(self) -> int:
        """Number of cells."""
        return len(self.detections)

    @property
    def counts(self) -> dict[str, int]:
        """Cells per predicted class (every class listed, zeros included)."""
        names = self.predicted
        return {c: names.count(c) for c in self.classes}

    @property
    def is_blast(self) -> np.ndarray:
        """``bool`` ``(N,)``: whether each cell's predicted class is a blast class."""
        return np.array([c in self.blast_classes for c in self.predicted], dtype=bool)

    @property
    def n_blasts(self) -> int:
        """Cells classified as blasts."""
        return int(self.is_blast.sum())

    @property
    def blast_share(self) -> float:
        """Share of blasts among the cells (NaN without cells)."""
        return blast_share_interval(self.n_blasts, len(self), self.confidence)[0]

    @property
    def blast_interval(self) -> tuple[float, float]:
        """Wilson interval of the blast share at :attr:`confidence`."""
        _, low, high = blast_share_interval(self.n_blasts, len(self), self.confidence)
        return low, high

    @property
    def verdict(self) -> str:
        """The blast share against the 20 % threshold of acute leukemia, given the interval.

        ``"above"`` when the whole interval lies at or above 20 %, ``"below"`` when it lies
        below, ``"uncertain"`` when it straddles the threshold (count more cells), and
        ``"no cells"`` without cells. A screening aid, not a diagnosis.
        """
        if not len(self):
            return "no cells"
        low, high = self.blast_interval
        if low >= ACUTE_LEUKEMIA_BLAST_THRESHOLD:
            return "above"
        if high < ACUTE_LEUKEMIA_BLAST_THRESHOLD:
            return "below"
        return "uncertain"

    def centroids(self) -> np.ndarray:
        """Nucleus centroid ``(x, y)`` of each cell in the original image's pixels."""
        return self.detections.centroids().numpy().astype(np.float64) / self.scale

    def blast_centroids(self) -> np.ndarray:
        """Centroids ``(x, y)`` of the cells classified as blasts, in original pixels."""
        points: np.ndarray = self.centroids()[self.is_blast]
        return points

    def summary(self) -> str:
        """Counts, the blast share with its interval, and the verdict, as text."""
        share = self.blast_share
        low, high = self.blast_interval
        lines = [f"cells: {len(self)}"]
        lines += [f"  {name}: {n}" for name, n in self.counts.items()]
        pct = "n/a" if np.isnan(share) else f"{100 * share:.1f} %"
        lines.append(
            f"blasts ({', '.join(self.blast_classes)}): {self.n_blasts} = {pct} "
            f"({100 * self.confidence:.0f} % CI {100 * low:.1f}-{100 * high:.1f} %)"
        )
        lines.append(f"against the 20 % acute-leukemia threshold: {self.verdict}")
        return "\n".join(lines)

    def overlay(self, *, header: bool = True) -> np.ndarray:
        """The image with outlined nuclei, class-coloured boxes (blasts red) and a summary strip.

        Args:
            header: Add the strip stating the counts, the blast share and its interval.

        Returns:
            ``uint8`` ``(H', W, 3)``.
        """
        text = None
        if header:
            lines = self.summary().splitlines()
            text = (
                f"{lines[0]}; "
                + ", ".join(s.strip() for s in lines[1:-2])
                + f"\n{lines[-2]}\n{lines[-1]}"
            )
        scores = [float(p.max()) for p in self.probabilities] if len(self) else []
        return draw_cells(
            self.image,
            self.detections.masks.numpy(),
            self.detections.boxes.numpy(),
            self.predicted,
            scores,
            class_colours(self.classes, self.blast_classes),
            header=text,
        )

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per cell: box and centroid (original pixels), score, class, probabilities."""
        boxes = self.detections.boxes.numpy() / self.scale
        rows = []
        for i, (box, centre) in enumerate(zip(boxes, self.centroids(), strict=True)):
            row: dict[str, Any] = {
                "cell": i,
                "x0": round(float(box[0]), 1),
                "y0": round(float(box[1]), 1),
                "x1": round(float(box[2]), 1),
                "y1": round(float(box[3]), 1),
                "x": round(float(centre[0]), 1),
                "y": round(float(centre[1]), 1),
                "detection_score": round(float(self.detections.scores[i]), 4),
                "class": self.predicted[i],
                "blast": bool(self.is_blast[i]),
            }
            probs = self.probabilities[i].tolist()
            row.update({f"p_{c}": round(p, 4) for c, p in zip(self.classes, probs, strict=True)})
            rows.append(row)
        return rows


def smear_overlay(analysis: SmearAnalysis, *, header: bool = True) -> np.ndarray:
    """Draw an analysis on its image (:meth:`SmearAnalysis.overlay`).

    Args:
        analysis: The analysis.
        header: Add the summary strip.

    Returns:
        ``uint8`` ``(H', W, 3)`` image.
    """
    return analysis.overlay(header=header)


def save_smear_overlay(
    analysis: SmearAnalysis, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write :meth:`SmearAnalysis.overlay` to an image file (format from the suffix, e.g. ``.png``).

    Args:
        analysis: The analysis.
        path: Output file; its folder is created.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        FileExistsError: The file exists and ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(analysis.overlay()).save(out)
    return out
