"""Per-fold attributions of a cross-validation: which held-out cells, their maps, their files.

:class:`~leukemia_wbc.experiments.CrossValidator` calls :func:`write_fold_attributions` after
each fold; :mod:`leukemia_wbc.evaluation.gallery` builds galleries of a finished result.
Besides each gallery cell's image and overlays, a fold's folder keeps what a report draws
again: each branch's raw map (``..._map-<branch>.png``, 16-bit grayscale scaled to the map's
maximum) and the nucleus mask the model used (``..._nucleus-mask.png``); :func:`gallery_items`
reads them back.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_text, json_safe, write_png
from ..data.base import WBCDataset
from ..data.datamodule import collate_samples
from ..explain import Explainer, attribution_share, overlay
from ..tasks.classifier_base import NUCLEUS_SOURCE_KEY
from .fold_attributions import (
    FOCUS_FILE,
    ExplainedCell,
    FoldAttributions,
    attributions_dir,
    check_method,
    focus_records,
)
from .predictions import Predictions
from .result import CVResult

__all__ = [
    "GalleryItem",
    "gallery_items",
    "nucleus_masks",
    "save_overlays",
    "select_cells",
    "write_fold_attributions",
]

_log = logging.getLogger(__name__)


@dataclass
class GalleryItem:
    """One explained held-out cell.

    Attributes:
        index: Dataset position.
        path: Image path.
        fold: Fold that held it out.
        label: True class name.
        pred: Predicted class name.
        prob: Probability of the predicted class.
        image: ``(H, W, 3)`` ``uint8`` image as decoded (before the model's pipeline).
        maps: Branch name to ``(H, W)`` attribution map (explaining the predicted class).
        nucleus_share: Branch name to the map's mass share inside the nucleus (``NaN``
            without a mask).
        nucleus_area: The nucleus's share of the image area (``NaN`` without a mask).
        mask: ``(H, W)`` nucleus mask the model used (nonzero inside), or ``None``.
        method: The attribution method of the maps (``"gradcam"``,
            ``"integrated_gradients"``).
        nucleus: Where the mask came from (``"dataset masks"``, the model's segmenter), or
            ``None``.
    """

    index: int
    path: str
    fold: int
    label: str
    pred: str
    prob: float
    image: np.ndarray
    maps: dict[str, np.ndarray]
    nucleus_share: dict[str, float]
    nucleus_area: float
    mask: np.ndarray | None = None
    method: str = "gradcam"
    nucleus: str | None = None

    @property
    def correct(self) -> bool:
        """Whether the prediction is right."""
        return self.label == self.pred


def select_cells(result: CVResult, per_class: int = 2) -> list[int]:
    """Rows of the out-of-fold predictions to show in the gallery.

    Per true class, the most confident correct and the most confident wrong predictions (up to
    ``per_class`` of each).

    Args:
        result: A cross-validation result.
        per_class: Cells of each kind (correct, wrong) per true class.

    Returns:
        Row positions in ``result.predictions``, grouped by class.
    """
    p = result.predictions
    pred = p.pred
    conf = p.probs.max(axis=1)
    rows: list[int] = []
    for c in range(len(result.classes)):
        for right in (True, False):
            mine = np.flatnonzero((p.label == c) & ((pred == c) == right))
            rows += mine[np.argsort(-conf[mine], kind="stable")][:per_class].tolist()
    return rows


def save_overlays(items: list[GalleryItem], folder: str | os.PathLike[str]) -> list[Path]:
    """Write each cell's image and map overlays as PNG files.

    Files are named ``<class>_<right|wrong>_<index>_<branch>.png`` (and ``..._image.png``).

    Args:
        items: Gallery cells.
        folder: Output folder (created if needed).

    Returns:
        The written files.
    """
    out = Path(folder)
    written: list[Path] = []
    for item in items:
        stem = _stem(item)
        pictures = {"image": item.image}
        pictures.update({k: overlay(item.image, m) for k, m in item.maps.items()})
        for name, picture in pictures.items():
            path = out / f"{stem}_{name}.png"
            write_png(path, picture)
            written.append(path)
    return written


def _stem(item: GalleryItem) -> str:
    return f"{item.label}_{'right' if item.correct else 'wrong'}_{item.index}"


def _save_raw(item: GalleryItem, folder: Path) -> dict[str, str]:
    """Write the cell's raw maps (16-bit, scaled to their maximum) and nucleus mask (8-bit).

    Returns:
        File key (``"map:<branch>"``, ``"mask"``) to the file name written in ``folder``.
    """
    pictures: dict[str, tuple[str, np.ndarray]] = {}
    for branch, heat in item.maps.items():
        h = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
        h = h / h.max() if h.size and h.max() > 0 else h
        pictures[f"map:{branch}"] = (f"map-{branch}", np.round(h * 65535).astype(np.uint16))
    if item.mask is not None:
        mask = np.asarray(item.mask) > 0
        pictures["mask"] = ("nucleus-mask", mask.astype(np.uint8) * 255)
    files = {}
    for key, (suffix, values) in pictures.items():
        name = f"{_stem(item)}_{suffix}.png"
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(values.reshape(values.shape[-2:]))).save(buf, "PNG")
        atomic_write_bytes(folder / name, buf.getvalue())
        files[key] = name
    return files


def _read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        values = np.asarray(picture, dtype=np.float64)
    return values.reshape(values.shape[:2])


def gallery_items(cells: Sequence[tuple[FoldAttributions, ExplainedCell]]) -> list[GalleryItem]:
    """Saved gallery cells read back for a figure: image, each branch's map, nucleus mask.

    Args:
        cells: ``(fold attributions, cell)`` pairs (e.g. of
            :func:`~leukemia_wbc.experiments.fold_attributions.report_cells`).

    Returns:
        One :class:`GalleryItem` per cell whose folder holds its raw maps (maps in ``[0, 1]``,
        each scaled to its maximum). Cells written before the raw maps were kept (only the
        image and the overlays) are left out.
    """
    items = []
    for att, cell in cells:
        if not all(f"map:{b}" in cell.files for b in att.branches):
            continue
        with Image.open(att.folder / cell.files["image"]) as picture:
            image = np.asarray(picture.convert("RGB"))
        mask = cell.files.get("mask")
        items.append(GalleryItem(
            cell.index, cell.path, att.fold, cell.label, cell.pred, cell.prob, image,
            {b: _read_gray(att.folder / cell.files[f"map:{b}"]) / 65535.0 for b in att.branches},
            dict(cell.nucleus_share), cell.nucleus_area,
            mask=None if mask is None else (_read_gray(att.folder / mask) > 0).astype(np.uint8),
            method=att.method, nucleus=att.nucleus,
        ))  # fmt: skip
    return items


def _focus_rows(p: Predictions, rows: np.ndarray, n_classes: int, max_cells: int) -> list[int]:
    """Up to ``max_cells`` of ``rows``, taken in turn from each true class (dataset order)."""
    by_class = [rows[p.label[rows] == c] for c in range(n_classes)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_cells and any(depth < len(b) for b in by_class):
        for b in by_class:
            if depth < len(b) and len(chosen) < max_cells:
                chosen.append(int(b[depth]))
        depth += 1
    return chosen


def _subset(p: Predictions, rows: np.ndarray) -> Predictions:
    return Predictions(p.index[rows], [p.path[r] for r in rows], [p.group[r] for r in rows],
                       p.label[rows], p.fold[rows], p.probs[rows], p.classes)  # fmt: skip


def nucleus_masks(model: Any, batch: dict[str, Any]) -> tuple[Tensor | None, str | None]:
    """A transformed batch's nucleus masks and where they came from.

    Args:
        model: The :class:`~leukemia_wbc.inference.TrainedModel` that transformed the batch.
        batch: The batch after ``model.transform``.

    Returns:
        The ``(B, 1, H, W)`` masks (the dataset's, else the model's segmenter's) and their
        source (``"dataset masks"`` or the segmenter), or ``(None, None)`` without either.
    """
    mask = batch.get("mask")
    segmenter = model.task.segmenter
    if isinstance(mask, Tensor):
        if batch.get(NUCLEUS_SOURCE_KEY) == "segmenter" and segmenter is not None:
            return mask, f"the model's segmenter ({type(segmenter).__name__})"
        return mask, "dataset masks"
    if segmenter is None:
        return None, None
    masks: Tensor = model.task.segment(batch["image"])
    return masks, f"the model's segmenter ({type(segmenter).__name__})"


def write_fold_attributions(
    result: CVResult,
    dataset: WBCDataset,
    fold: int,
    *,
    method: str = "gradcam",
    per_class: int = 2,
    max_cells: int = 64,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    n_steps: int = 32,
) -> FoldAttributions:
    """Explain fold ``fold``'s held-out cells with its model; write the gallery and focus table.

    Args:
        result: A Lightning task's cross-validation result holding the fold (its output folder,
            checkpoint and held-out predictions).
        dataset: The dataset the cross-validation ran on.
        fold: The fold.
        method: ``"gradcam"`` or ``"integrated_gradients"``.
        per_class: Gallery cells of each kind (correct, wrong) per true class.
        max_cells: Held-out cells explained for the focus table (spread over the classes).
        device: Where the model runs.
        batch_size: Cells explained at once.
        n_steps: Integration steps of Integrated Gradients.

    Returns:
        The written :class:`FoldAttributions`.

    Raises:
        ValueError: A bad method or count, no output folder, no held-out cells of the fold, or a
            feature baseline (no gradients).
        FileExistsError: The fold's folder for ``method`` exists (delete it to recompute).
    """
    chosen = check_method(method, "method")
    if chosen is None:
        raise ValueError("method: expected 'gradcam' or 'integrated_gradients', got None")
    if per_class < 0 or max_cells < 0:
        raise ValueError(f"per_class and max_cells must be >= 0, got {per_class}, {max_cells}")
    if result.output_dir is None:
        raise ValueError(f"{result.name}: no output folder to write the attributions into")
    final = attributions_dir(result.output_dir / f"fold_{fold}", chosen)
    if final.exists():
        raise FileExistsError(f"{final} exists; delete it to compute the attributions again")
    p = result.predictions
    rows = np.flatnonzero(p.fold == fold)
    if rows.size == 0:
        raise ValueError(f"{result.name}: fold {fold} has no held-out predictions")
    shown = [int(rows[r]) for r in select_cells(replace(result, predictions=_subset(p, rows)),
                                                per_class)]  # fmt: skip
    measured = _focus_rows(p, rows, len(result.classes), max_cells)
    model = result.trained_model(fold, device=device)
    explainer = Explainer(model.task, chosen, n_steps=n_steps)
    cells: dict[int, ExplainedCell] = {}
    items: dict[int, GalleryItem] = {}
    source: str | None = None
    todo = sorted(set(shown) | set(measured))
    for start in range(0, len(todo), max(1, batch_size)):
        chunk = todo[start : start + max(1, batch_size)]
        kept = [(r, s) for r in chunk if (s := dataset[int(p.index[r])]) is not None]
        if not kept:
            continue
        batch = model.transform(collate_samples([s for _, s in kept]))
        attr = explainer.explain(batch)
        mask, source = nucleus_masks(model, batch)
        mask = None if mask is None else mask.cpu()
        shares = {k: attribution_share(v, mask) if mask is not None else None
                  for k, v in attr.maps.items()}  # fmt: skip
        for j, (r, sample) in enumerate(kept):
            pred = int(attr.probs[j].argmax())
            area = float((mask[j] > 0).float().mean()) if mask is not None else math.nan
            cells[r] = ExplainedCell(
                index=int(p.index[r]), path=p.path[r], label=result.classes[int(p.label[r])],
                pred=result.classes[pred], prob=float(attr.probs[j, pred]), nucleus_area=area,
                nucleus_share={k: float(s[j]) if s is not None else math.nan
                               for k, s in shares.items()},
            )  # fmt: skip
            if r in shown:
                c = cells[r]
                items[r] = GalleryItem(c.index, c.path, fold, c.label, c.pred, c.prob,
                                       sample["image"].permute(1, 2, 0).numpy(),
                                       {k: v[j, 0].numpy() for k, v in attr.maps.items()},
                                       c.nucleus_share, c.nucleus_area,
                                       None if mask is None else mask[j, 0].numpy(),
                                       chosen, source)  # fmt: skip
    branches = tuple(explainer.branches)
    out = FoldAttributions(
        fold=fold, method=chosen, folder=final, classes=tuple(result.classes), branches=branches,
        nucleus=source, gallery=[cells[r] for r in shown if r in items],
        cells=[cells[r] for r in measured if r in cells], per_class=per_class,
        max_cells=max_cells,
    )  # fmt: skip
    _write(out, [items[r] for r in shown if r in items], result)
    if source is None:
        _log.info("%s: fold %d: no nucleus masks (data) and no segmenter (model): attributions "
                  "written without the nucleus-focus table", result.name, fold)  # fmt: skip
    return out


def _write(att: FoldAttributions, items: list[GalleryItem], result: CVResult) -> None:
    """Write the folder under a temporary name, then rename it into place."""
    root = att.folder.parent
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{att.method}.*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{att.method}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()  # (not mkdtemp: the folder keeps the umask's permissions, as others do)
        written = save_overlays(items, tmp)
        panels = ("image", *att.branches)
        for i, (cell, item) in enumerate(zip(att.gallery, items, strict=True)):
            names = written[i * len(panels) : (i + 1) * len(panels)]
            cell.files = {k: f.name for k, f in zip(panels, names, strict=True)}
            cell.files.update(_save_raw(item, tmp))
        fold_result = [f for f in result.folds if f.fold == att.fold]
        body = {
            "fold": att.fold,
            "method": att.method,
            "classes": list(att.classes),
            "branches": list(att.branches),
            "nucleus": att.nucleus,
            "per_class": att.per_class,
            "max_cells": att.max_cells,
            "checkpoint": fold_result[0].checkpoint if fold_result else None,
            "focus": focus_records([att]),
            "gallery": [asdict(c) for c in att.gallery],
            "cells": [asdict(c) for c in att.cells],
        }
        atomic_write_text(tmp / FOCUS_FILE, json.dumps(json_safe(body), indent=2))
        os.rename(tmp, att.folder)  # atomic: the folder appears complete, or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
