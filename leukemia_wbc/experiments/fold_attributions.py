"""Attributions inside a cross-validation: the files of each fold, read back and pooled.

With ``CrossValidator(..., attributions="gradcam")`` (or ``"integrated_gradients"``), each
fold, once trained, explains some of its held-out cells with its own best model (see
:func:`~leukemia_wbc.experiments.write_fold_attributions`) into
``fold_<k>/attributions/<method>/``:

* the gallery: per true class, the most confident correct and the most confident wrong
  predictions (up to ``per_class`` of each), as ``<class>_<right|wrong>_<index>_image.png``
  and one ``..._<branch>.png`` overlay per branch;
* ``focus.json``: the settings, the gallery's cells, and for up to ``max_cells`` held-out
  cells (spread evenly over the true classes) each branch's share of attribution mass inside
  the nucleus and the nucleus's share of the image.

The folder is built under a hidden temporary name and renamed into place once complete, so it
is either absent or whole: a killed run leaves nothing that is read as finished.
:func:`read_fold_attributions` reads the folders back, :func:`pooled_focus` pools the folds per
class and :func:`focus_table` writes the report's table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..explain import AttributionMethod, NucleusFocus

__all__ = [
    "ATTRIBUTION_METHODS",
    "FOCUS_FILE",
    "METHOD_NAMES",
    "ExplainedCell",
    "FoldAttributions",
    "attributions_dir",
    "check_method",
    "focus_records",
    "focus_report",
    "focus_table",
    "pooled_focus",
    "read_fold_attributions",
    "report_cells",
]


#: The attribution methods a cross-validation can write.
ATTRIBUTION_METHODS: tuple[str, ...] = ("gradcam", "integrated_gradients")
#: The folder's table, written last (before the folder is renamed into place).
FOCUS_FILE = "focus.json"


def check_method(value: object, where: str = "attributions") -> AttributionMethod | None:
    """A validated attribution method name (``None`` stays ``None``: attributions off).

    Args:
        value: The value given.
        where: The argument's name, for the message.

    Returns:
        The method.

    Raises:
        ValueError: Anything but ``None`` or one of :data:`ATTRIBUTION_METHODS`.
    """
    if value is None:
        return None
    if value not in ATTRIBUTION_METHODS:
        known = ", ".join(repr(m) for m in ATTRIBUTION_METHODS)
        raise ValueError(f"{where}: expected {known} or None (off), got {value!r}")
    return cast(AttributionMethod, value)


def attributions_dir(fold_folder: str | os.PathLike[str], method: str) -> Path:
    """The folder of a fold's attributions by ``method``: ``<fold_folder>/attributions/<method>``.

    Args:
        fold_folder: The fold's folder (``<output_dir>/fold_<k>``).
        method: The attribution method.

    Returns:
        The folder.
    """
    return Path(fold_folder) / "attributions" / method


@dataclass
class ExplainedCell:
    """One explained held-out cell.

    Attributes:
        index: Dataset position.
        path: Image path.
        label: True class name.
        pred: Predicted class name (the class the maps explain).
        prob: Probability of the predicted class.
        nucleus_area: The nucleus's share of the image (``NaN`` without a nucleus mask).
        nucleus_share: Branch name to its map's mass share inside the nucleus (``NaN`` without
            a nucleus mask, or for an all-zero map).
        files: Panel (``"image"`` or a branch name) to its PNG file name in the folder (gallery
            cells only).
    """

    index: int
    path: str
    label: str
    pred: str
    prob: float
    nucleus_area: float
    nucleus_share: dict[str, float]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        """Whether the prediction is right."""
        return self.label == self.pred


@dataclass
class FoldAttributions:
    """One fold's saved attributions (see the module docstring for the files).

    Attributes:
        fold: Fold index.
        method: Attribution method.
        folder: The folder holding the PNG files and ``focus.json``.
        classes: Class names.
        branches: Branch names (``"cell"``, and ``"nucleus"`` for two-branch models).
        nucleus: Where the nucleus masks came from (``"dataset masks"`` or the model's
            segmenter); ``None``: no masks, so no focus measure.
        gallery: The gallery's cells, with their files.
        cells: The cells the focus table is measured on.
        per_class: Gallery cells of each kind (correct, wrong) per class asked for.
        max_cells: Cells asked for the focus table.
    """

    fold: int
    method: str
    folder: Path
    classes: tuple[str, ...]
    branches: tuple[str, ...]
    nucleus: str | None
    gallery: list[ExplainedCell]
    cells: list[ExplainedCell]
    per_class: int
    max_cells: int

    def focus(self) -> list[NucleusFocus]:
        """Per branch, this fold's attribution share inside the nucleus against its area.

        Returns:
            One :class:`NucleusFocus` per branch (none without nucleus masks).
        """
        return pooled_focus([self])


def _cell(data: dict[str, Any], where: Path) -> ExplainedCell:
    files = {str(k): str(v) for k, v in (data.get("files") or {}).items()}
    for name in files.values():  # plain names inside the folder only
        if name != Path(name).name or name.startswith(".") or not name.endswith(".png"):
            raise ValueError(f"{where}: {name!r} is not a PNG file name of the folder")
    return ExplainedCell(
        index=int(data["index"]), path=str(data["path"]), label=str(data["label"]),
        pred=str(data["pred"]), prob=float(data["prob"]),
        nucleus_area=math.nan if data["nucleus_area"] is None else float(data["nucleus_area"]),
        nucleus_share={str(k): math.nan if v is None else float(v)
                       for k, v in data["nucleus_share"].items()},
        files=files,
    )  # fmt: skip


def read_fold_attributions(
    output_dir: str | os.PathLike[str],
    *,
    folds: Sequence[int] | None = None,
    method: str | None = None,
) -> list[FoldAttributions]:
    """The complete attribution folders of a cross-validation's folds.

    Args:
        output_dir: The folder a :class:`~leukemia_wbc.experiments.CrossValidator` wrote.
        folds: Only these folds (default all).
        method: Only this method (default all).

    Returns:
        The attributions, by method then fold (empty when none were written).

    Raises:
        ValueError: An unknown method, or a ``focus.json`` that is not one this library wrote
            for its folder.
    """
    found: list[FoldAttributions] = []
    methods = ATTRIBUTION_METHODS if method is None else (str(check_method(method, "method")),)
    for name in methods:  # hidden temporary folders never match
        for path in Path(output_dir).glob(f"fold_*/attributions/{name}/{FOCUS_FILE}"):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
                att = FoldAttributions(
                    fold=int(body["fold"]), method=name, folder=path.parent,
                    classes=tuple(str(c) for c in body["classes"]),
                    branches=tuple(str(b) for b in body["branches"]),
                    nucleus=None if body["nucleus"] is None else str(body["nucleus"]),
                    gallery=[_cell(c, path) for c in body["gallery"]],
                    cells=[_cell(c, path) for c in body["cells"]],
                    per_class=int(body["per_class"]), max_cells=int(body["max_cells"]),
                )  # fmt: skip
            except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path} is not an attributions file ({err!r})") from None
            if path.parents[2].name != f"fold_{att.fold}":
                raise ValueError(f"{path} records fold {att.fold}, not its folder's")
            if folds is None or att.fold in folds:
                found.append(att)
    found.sort(key=lambda a: (ATTRIBUTION_METHODS.index(a.method), a.fold))
    return found


def pooled_focus(attributions: Sequence[FoldAttributions]) -> list[NucleusFocus]:
    """Attribution share inside the nucleus and the nucleus's area, per class, over folds.

    The cells of all the given folds are pooled: per true class, the mean over cells of each
    branch's share of attribution mass inside the nucleus (cells with an all-zero map left
    out) and the mean nucleus area of the same cells.

    Args:
        attributions: Folds of one method (and one model).

    Returns:
        One :class:`NucleusFocus` per branch; none when no fold had nucleus masks.
    """
    with_masks = [a for a in attributions if a.nucleus is not None]
    if not with_masks:
        return []
    classes, branches = with_masks[0].classes, with_masks[0].branches
    cells = [c for a in with_masks for c in a.cells]
    label = np.array([classes.index(c.label) for c in cells], dtype=np.int64)
    area = np.array([c.nucleus_area for c in cells], dtype=np.float64)
    count = np.bincount(label, minlength=len(classes))
    out = []
    for branch in branches:
        share = np.array([c.nucleus_share.get(branch, math.nan) for c in cells])
        means = np.full((2, len(classes)), np.nan)
        for k in range(len(classes)):
            rows = (label == k) & ~np.isnan(share)
            if rows.any():
                means[0, k], means[1, k] = share[rows].mean(), area[rows].mean()
        out.append(NucleusFocus(classes, means[0], means[1], count, branch))
    return out


def focus_records(attributions: Sequence[FoldAttributions]) -> dict[str, list[dict[str, Any]]]:
    """:func:`pooled_focus` as plain data: branch to per-class rows (``NaN`` where undefined).

    Args:
        attributions: Folds of one method and model.

    Returns:
        Branch name to rows ``{"class", "cells", "attribution_in_nucleus", "nucleus_area"}``.
    """
    return {
        f.branch: [
            {"class": c, "cells": int(f.count[i]), "attribution_in_nucleus": float(f.share[i]),
             "nucleus_area": float(f.area[i])}
            for i, c in enumerate(f.classes)
        ]
        for f in pooled_focus(attributions)
    }  # fmt: skip


def focus_table(attributions: Sequence[FoldAttributions], digits: int = 2) -> str:
    """The report's nucleus-focus table of one model and method, pooled over its folds.

    One row per class (and one for all cells): cells measured, the nucleus's mean share of
    the image, then per branch the share of attribution inside the nucleus (pooled mean, ± the
    standard deviation of the folds' means) and its ratio to the nucleus area of the same
    cells. Cells whose map is all zero (Grad-CAM finds no positive evidence) have no share;
    a line under the table counts them per branch.

    Args:
        attributions: Folds of one method and model.
        digits: Decimals.

    Returns:
        A Markdown table (empty when no fold had nucleus masks).
    """
    masked = [a for a in attributions if a.nucleus is not None]
    if not masked:
        return ""
    pooled = pooled_focus(masked)
    per_fold = [pooled_focus([a]) for a in masked]
    head = ["class", "cells", "nucleus area"]
    for f in pooled:
        head += [f"{f.branch} branch: attribution in nucleus", f"{f.branch} branch: ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    cells = [c for a in masked for c in a.cells]
    rows = [(c, pooled, per_fold, k) for k, c in enumerate(pooled[0].classes)
            if pooled[0].count[k] > 0]  # fmt: skip
    rows.append(("all classes", _overall(masked), [_overall([a]) for a in masked], 0))
    for name, focus, folds, i in rows:
        area = [c.nucleus_area for c in cells if name in ("all classes", c.label)]
        row = [name, str(int(focus[0].count[i])), _num(float(np.nanmean(area)), digits)]
        for b, f in enumerate(focus):
            spread = np.array([fold[b].share[i] for fold in folds])
            spread = spread[np.isfinite(spread)]
            std = f" ± {spread.std(ddof=1):.{digits}f}" if spread.size > 1 else ""
            ratio = f.share[i] / f.area[i] if f.area[i] > 0 else math.nan
            row += [_num(f.share[i], digits) + std, _num(ratio, digits)]
        lines.append("| " + " | ".join(row) + " |")
    zero = {f.branch: sum(math.isnan(c.nucleus_share.get(f.branch, math.nan)) for c in cells)
            for f in pooled}  # fmt: skip
    if any(zero.values()):
        counts = ", ".join(f"{b} branch {n} of {len(cells)}" for b, n in zero.items() if n)
        lines += ["", f"Cells whose map is all zero, left out of the averages: {counts}."]
    return "\n".join(lines) + "\n"


#: Method names as a reader knows them.
METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients"}


def focus_report(attributions: Sequence[FoldAttributions]) -> str:
    """The report's text on one model's attributions: what was explained, the table, its meaning.

    Args:
        attributions: Folds of one method and model.

    Returns:
        Markdown paragraphs and the :func:`focus_table`.
    """
    if not attributions:
        return ""
    first = attributions[0]
    folds = ", ".join(str(a.fold) for a in attributions)
    shown = sum(len(a.gallery) for a in attributions)
    parts = [
        f"{METHOD_NAMES.get(first.method, first.method)} maps of each fold's best model on "
        f"that fold's own held-out cells (folds {folds}), explaining the predicted class, "
        f"right or wrong. Every fold's gallery ({shown} cells in all) and its focus.json are in "
        f"fold_<k>/attributions/{first.method}/ of the output folder; below, per class, the "
        "most confident correct and the most confident wrong prediction over all folds."
    ]
    masked = [a for a in attributions if a.nucleus is not None]
    if not masked:
        parts.append("No nucleus-focus table: the data has no nucleus masks and the model no "
                     "segmenter to measure the maps against.")  # fmt: skip
        return "\n\n".join(parts) + "\n"
    sources = sorted({str(a.nucleus) for a in masked})
    n_cells = sum(len(a.cells) for a in masked)
    parts.append(
        f"**Nucleus focus** ({n_cells} held-out cells, up to {first.max_cells} per fold taken in "
        f"turn from each class; nucleus from {' and '.join(sources)}). 'Attribution in nucleus' "
        "is the share of a cell's attribution mass that lies inside its nucleus, averaged over "
        "the cells of the class (± the standard deviation of the folds' averages). 'Nucleus "
        "area' is the nucleus's share of the image: the value a map spread evenly over the "
        "image would give. Their ratio is above 1 when the maps concentrate on the nucleus more "
        "than an even spread would, about 1 when they do not."
    )
    if "nucleus" in first.branches:
        parts.append(
            "The nucleus branch sees only the nucleus crop (zero outside the mask), so its mass "
            "lies mostly on the nucleus by construction; the cell branch's ratio tells whether "
            "the whole-cell network looks at the nucleus."
        )
    missing = [a.fold for a in attributions if a.nucleus is None]
    if missing:
        parts.append(f"Folds {missing} had no nucleus masks and are not in the table.")
    return "\n\n".join([*parts, focus_table(attributions)])


def report_cells(
    attributions: Sequence[FoldAttributions],
) -> list[tuple[FoldAttributions, ExplainedCell]]:
    """The gallery cells a report shows: per class, the most confident right and wrong one.

    Args:
        attributions: Folds of one method and model.

    Returns:
        ``(fold attributions, cell)`` pairs, by class, a correct one first.
    """
    if not attributions:
        return []
    pairs = [(a, c) for a in attributions for c in a.gallery]
    chosen = []
    for cls in attributions[0].classes:
        for right in (True, False):
            mine = [(a, c) for a, c in pairs if c.label == cls and c.correct == right]
            if mine:
                chosen.append(max(mine, key=lambda pair: pair[1].prob))
    return chosen


def _overall(attributions: Sequence[FoldAttributions]) -> list[NucleusFocus]:
    """:func:`pooled_focus` with every cell in one class."""
    merged = [
        replace(a, classes=("all",), cells=[replace(c, label="all") for c in a.cells])
        for a in attributions
    ]
    return pooled_focus(merged)


def _num(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
