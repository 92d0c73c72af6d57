"""The attribution gallery of every report: held-out cells as columns, what the model saw as rows.

:func:`gallery_figure` draws one grid for the demo's gallery
(:func:`~leukemia_wbc.evaluation.attribution_gallery`) and for each model's per-fold gallery
of a cross-validation (:func:`fold_gallery_figure`, read back with
:func:`~leukemia_wbc.experiments.gallery_items`). Each column is a cell, titled with its true
class, the predicted class and its probability, the fold that held it out, and whether the
prediction is right. The rows are the image (at its own resolution, enlarged to a readable
panel), one attribution map per branch laid over it (Integrated Gradients smoothed as in
:mod:`~leukemia_wbc.report.overlays`) with one colour bar for the row, and the outline of the
nucleus mask the model used where one is known. Many cells wrap into several blocks of at most
:data:`MAX_COLUMNS` columns. The figure is drawn at a fixed pixel layout (no tight cropping), so
its size depends only on the number of columns, rows and blocks.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from .._io import json_safe
from ..experiments.attributions import GalleryItem, gallery_items
from ..experiments.fold_attributions import (
    METHOD_NAMES,
    ExplainedCell,
    FoldAttributions,
    focus_records,
    focus_report,
    report_cells,
)
from ..experiments.result import CVResult
from ..explain import overlay
from .overlays import smooth_attribution, to_size

__all__ = [
    "FLAT",
    "MAX_COLUMNS",
    "PANEL_PX",
    "block_sizes",
    "fold_gallery_figure",
    "gallery_figure",
]

#: Side of each image panel in the PNG, in pixels (smaller images are enlarged to it).
PANEL_PX = 180
#: Most cells side by side; more wrap into further blocks. Five columns keep the figure about
#: as wide as the report's page, so that the browser does not shrink the panels.
MAX_COLUMNS = 5
#: A map whose lowest value is at least this share of its peak is captioned as nearly flat
#: (scaled to its own maximum, it would otherwise look like strong evidence everywhere).
FLAT = 0.75
_DPI = 100
# The layout, in pixels: row labels on the left, colour bars on the right, a header, and per
# block the column titles, then rows of a panel, a caption line and a gap.
_LEFT, _RIGHT, _TITLE, _CAPTION, _GAP, _BLOCK_GAP, _BOTTOM = 132, 120, 52, 28, 6, 26, 6
_RIGHT_COLOUR, _WRONG_COLOUR, _OUTLINE_COLOUR = "#14571c", "#b00000", "#39ff14"


def block_sizes(n: int, max_columns: int = MAX_COLUMNS) -> list[int]:
    """How ``n`` cells are spread over blocks of at most ``max_columns`` (as evenly as possible).

    Args:
        n: Cells.
        max_columns: Most cells in one block.

    Returns:
        Cells per block, e.g. ``[4, 3]`` for 7 cells.

    Raises:
        ValueError: ``max_columns`` below 1.
    """
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    if n <= 0:
        return []
    per = math.ceil(n / math.ceil(n / max_columns))
    return [min(per, n - start) for start in range(0, n, per)]


def _heat(item: GalleryItem, branch: str) -> np.ndarray:
    """The branch's map at the image's size, in ``[0, 1]`` (all zero stays zero)."""
    heat = torch.as_tensor(np.asarray(item.maps[branch], dtype=np.float32))
    heat = heat.reshape(heat.shape[-2:])
    heat = smooth_attribution(heat) if item.method == "integrated_gradients" else heat.abs()
    return to_size(heat, (int(item.image.shape[0]), int(item.image.shape[1])))


def _mask(item: GalleryItem) -> np.ndarray | None:
    """The item's mask as ``bool`` at the image's size (nearest neighbour), or ``None``."""
    if item.mask is None:
        return None
    mask = np.asarray(item.mask).reshape(np.asarray(item.mask).shape[-2:]) > 0
    height, width = item.image.shape[:2]
    if mask.shape != (height, width):
        picture = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(picture.resize((width, height), Image.Resampling.NEAREST)) > 0
    return mask


def _show(ax: Axes, picture: np.ndarray, caption: str = "") -> None:
    ax.imshow(picture, interpolation="bilinear" if picture.shape[0] < PANEL_PX else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if caption:
        ax.text(0.5, -0.02, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)


def _caption(item: GalleryItem, branch: str, heat: np.ndarray) -> str:
    """What a map panel's colours alone do not say: its share in the nucleus, a flat map."""
    if not heat.any():
        return "map all zero: no positive evidence"
    share = item.nucleus_share.get(branch, math.nan)
    lines = [] if math.isnan(share) else [f"attribution in nucleus: {share:.0%}"]
    if heat.min() >= FLAT:
        lines.append(f"nearly flat: min {heat.min():.0%} of peak")
    return "\n".join(lines)


def _title(item: GalleryItem) -> tuple[str, str]:
    mark = "right" if item.correct else "WRONG"
    text = (f"true {item.label}\npredicted {item.pred} (p = {item.prob:.2f})\n"
            f"fold {item.fold}: {mark}")  # fmt: skip
    return text, _RIGHT_COLOUR if item.correct else _WRONG_COLOUR


def _header(method: str, width: int) -> list[str]:
    name = METHOD_NAMES.get(method, method)
    smoothed = " (smoothed: a Gaussian of the absolute attribution)" if (
        method == "integrated_gradients") else ""  # fmt: skip
    text = (
        f"{name}{smoothed} of held-out cells, each explained by the model of the fold that held "
        "it out, for the class it predicted (right or wrong). Each map is scaled to its own "
        "maximum: the colours compare regions within a cell, not cells. Red titles: wrong "
        "predictions."
    )
    return textwrap.wrap(text, width=max(30, int((width - 16) / 6.2)))


def gallery_figure(items: Sequence[GalleryItem], *, max_columns: int = MAX_COLUMNS) -> bytes | None:
    """The gallery grid: cells as columns; image, attribution per branch, nucleus as rows.

    Args:
        items: Explained cells of one attribution method.
        max_columns: Most cells side by side (more wrap into further blocks).

    Returns:
        PNG bytes, or ``None`` for no items.

    Raises:
        ValueError: Items of different attribution methods.
    """
    if not items:
        return None
    methods = sorted({i.method for i in items})
    if len(methods) > 1:
        raise ValueError(f"gallery_figure: one attribution method per grid, got {methods}")
    method = methods[0]
    name = METHOD_NAMES.get(method, method)
    branches = list(dict.fromkeys(b for i in items for b in i.maps))
    outline = any(i.mask is not None for i in items)
    sizes = block_sizes(len(items), max_columns)
    rows = 1 + len(branches) + int(outline)
    row_h = PANEL_PX + _CAPTION + _GAP
    block_h = _TITLE + rows * row_h
    width = _LEFT + max(sizes) * (PANEL_PX + _GAP) + _RIGHT
    header = _header(method, width)
    top = 14 + 13 * len(header)
    height = top + len(sizes) * block_h + (len(sizes) - 1) * _BLOCK_GAP + _BOTTOM
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)

    def frac(x: float, y: float, w: float = 0, h: float = 0) -> tuple[float, float, float, float]:
        """Figure fractions of a box given in pixels from the top left."""
        return x / width, 1 - (y + h) / height, w / width, h / height

    fig.text(*frac(8, 8)[:2], "\n".join(header), fontsize=8, va="top", linespacing=1.25)
    sides = {(int(i.image.shape[1]), int(i.image.shape[0])) for i in items}
    labels = ["image" + ("\n{}x{} px".format(*next(iter(sides))) if len(sides) == 1 else "")
              + "\nas decoded\nfor the model"]  # fmt: skip
    method_label = textwrap.fill(name, 12) + ("\n(smoothed)" if method == "integrated_gradients"
                                              else "")  # fmt: skip
    labels += [f"{method_label}\n{textwrap.fill(b + ' branch', 14)}" for b in branches]
    source = next((i.nucleus for i in items if i.nucleus), None)
    if outline:
        where = textwrap.fill(f"({source})", 16, break_long_words=False) if source else ""
        labels.append(f"nucleus outline\n{where}".strip())
    start = 0
    for size in sizes:
        block = items[start : start + size]
        start += size
        for r, label in enumerate(labels):
            y = top + _TITLE + r * row_h + PANEL_PX / 2
            fig.text(*frac(_LEFT - 10, y)[:2], label, ha="right", va="center", fontsize=8)
        for c, item in enumerate(block):
            x = _LEFT + c * (PANEL_PX + _GAP)
            axes = [fig.add_axes(frac(x, top + _TITLE + r * row_h, PANEL_PX, PANEL_PX))
                    for r in range(rows)]  # fmt: skip
            text, colour = _title(item)
            axes[0].set_title(text, fontsize=8, color=colour, pad=4, linespacing=1.2)
            _show(axes[0], item.image)
            for ax, branch in zip(axes[1:], branches, strict=False):
                if branch not in item.maps:
                    _show(ax, np.full_like(item.image, 255), "no map of this branch")
                    continue
                heat = _heat(item, branch)
                _show(ax, overlay(item.image, heat), _caption(item, branch, heat))
            if outline:
                _outline(axes[-1], item)
        bar_x = _LEFT + size * (PANEL_PX + _GAP) + 4
        for r, branch in enumerate(branches, start=1):
            bar = fig.add_axes(frac(bar_x, top + _TITLE + r * row_h, 12, PANEL_PX))
            cb = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=bar,
                              ticks=[0, 0.5, 1])  # fmt: skip
            cb.set_label(f"{name}, {branch} branch:\nrelative attribution (1 = the cell's peak)",
                         fontsize=7)  # fmt: skip
            cb.ax.tick_params(labelsize=7)
        top += block_h + _BLOCK_GAP
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _outline(ax: Axes, item: GalleryItem) -> None:
    """The image with the nucleus mask's contour, captioned with the nucleus's area share."""
    mask = _mask(item)
    if mask is None:
        _show(ax, item.image, "no nucleus mask")
        return
    area = f"nucleus {mask.mean():.0%} of the image"
    if not mask.any():
        area = "no nucleus found"
    _show(ax, item.image, area)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float64), levels=[0.5], colors=[_OUTLINE_COLOUR],
                   linewidths=1.6)  # fmt: skip


def fold_gallery_figure(cells: Sequence[tuple[FoldAttributions, ExplainedCell]]) -> bytes | None:
    """:func:`gallery_figure` of saved per-fold gallery cells (read from their folders).

    Args:
        cells: Cells of :attr:`FoldAttributions.gallery` with the fold they come from (one
            method).

    Returns:
        PNG bytes, or ``None`` when no cell has its raw maps saved (none given, or folders
        written by an earlier version, which kept only the overlays).
    """
    return gallery_figure(gallery_items(cells))


def _attribution_sections(
    results: Sequence[CVResult],
    sections: list[tuple[str, str, list[str]]],
    figures: dict[str, bytes],
) -> dict[str, Any]:
    """Add each model's per-fold attributions (text, focus table, gallery) to the report.

    A network whose folds wrote no attributions gets a line that says how to add them.

    Returns:
        Model name to method to the pooled focus rows and the folders, for ``report.json``.
    """
    summary: dict[str, Any] = {}
    for i, r in enumerate(results):
        found = r.attributions()
        if not found and r.output_dir is not None and not r.is_baseline:
            sections.append((f"Attributions: {r.name}", _NONE.format(r.output_dir), []))
        for method in dict.fromkeys(a.method for a in found):
            mine = [a for a in found if a.method == method]
            key = f"attributions_{i}_{method}"
            cells = report_cells(mine)
            items = gallery_items(cells)
            picture = gallery_figure(items)
            if picture is not None:
                figures[key] = picture
            text = focus_report(mine)
            if len(items) < len(cells):
                text += _OLD.format(len(cells) - len(items), len(cells), method)
            heading = f"Attributions: {r.name} ({METHOD_NAMES.get(method, method)})"
            sections.append((heading, text, [key] if picture else []))
            summary.setdefault(r.name, {})[method] = {
                "folds": {str(a.fold): {"folder": str(a.folder), "nucleus": a.nucleus,
                                        "focus": json_safe(focus_records([a]))}
                          for a in mine},
                "focus": json_safe(focus_records(mine)),
            }  # fmt: skip
    return summary


_NONE = (
    "No attribution maps: this cross-validation ran without `attributions`. Running it again "
    "into the same folder ({}) with `--cv.attributions gradcam` (or `integrated_gradients`; "
    '`CrossValidator(..., attributions="gradcam")` in Python) explains each finished fold\'s '
    "held-out cells with its own model and adds the gallery here, without retraining.\n"
)
_OLD = (
    "\n{} of the {} gallery cells are not drawn: their folders were written by an earlier "
    "version, which kept only the overlay images (still in the folders). Delete "
    "fold_<k>/attributions/{}/ and run the cross-validation again to draw them (no "
    "retraining).\n"
)


def _gallery_table(items: Sequence[GalleryItem]) -> str:
    """The demo gallery's cells as a Markdown table (file, fold, classes, nucleus shares)."""
    branches = list(items[0].maps)
    head = ["cell", "fold", "true", "predicted", "probability", "nucleus area",
            *(f"{b} attribution in nucleus" for b in branches)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for g in items:
        shares = [_num(g.nucleus_share.get(b, math.nan)) for b in branches]
        lines.append(f"| {Path(g.path).name} | {g.fold} | {g.label} | {g.pred} | {g.prob:.2f} | "
                     f"{_num(g.nucleus_area)} | " + " | ".join(shares) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
