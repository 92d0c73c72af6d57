"""The cross-validation report: one self-contained HTML file, with Markdown and JSON beside it."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, atomic_write_text, json_safe
from ..evaluation.compare import compare, comparison_warnings, shortcut_warnings
from ..evaluation.cross_dataset import CrossDatasetResult
from ..evaluation.robustness import RobustnessResult
from ..experiments.attributions import GalleryItem
from ..experiments.result import CVResult
from .figures import (
    class_balance_figure,
    confusion_figure,
    curves_figure,
    folds_figure,
    robustness_figure,
    roc_figure,
)
from .gallery import _attribution_sections, _gallery_table, gallery_figure

__all__ = ["ReportFiles", "environment", "write_report"]

_log = logging.getLogger(__name__)

_PACKAGES = (
    "leukemia-wbc",
    "torch",
    "torchvision",
    "lightning",
    "timm",
    "kornia",
    "segmentation-models-pytorch",
    "captum",
    "torchmetrics",
    "scikit-learn",
    "numpy",
)


@dataclass(frozen=True)
class ReportFiles:
    """Paths of a written report.

    Attributes:
        html: The self-contained HTML file.
        markdown: The Markdown file (figures in ``figures/``).
        json: The JSON summary.
        figures: The PNG figures.
    """

    html: Path
    markdown: Path
    json: Path
    figures: list[Path]


def environment() -> dict[str, str]:
    """Library versions, Python, platform and compute device of this process."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    if torch.cuda.is_available():
        env["device"] = f"CUDA: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        env["device"] = (
            f"CPU: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"
        )
    return env


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_EMPTY_HEAD = re.compile(r"<thead>\s*<tr>\s*(?:<th>\s*</th>\s*)+</tr>\s*</thead>\s*")


def _markdown_html(text: str) -> str:
    """Render the report's Markdown (CommonMark with tables; raw HTML escaped, not passed on).

    A key-value table written with an empty header row (``| | |``) loses that row.
    """
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return _EMPTY_HEAD.sub("", rendered)


def _timings(results: Sequence[CVResult]) -> str:
    lines = [
        "| Model | training s / fold (mean) | inference ms / image (mean) |",
        "| --- | --- | --- |",
    ]
    for r in results:
        train = np.mean([f.train_seconds for f in r.folds])
        infer = np.mean([f.predict_ms_per_image for f in r.folds])
        lines.append(f"| {r.name} | {train:.1f} | {infer:.2f} |")
    return "\n".join(lines) + "\n"


def _pretrain_note(result: CVResult) -> str:
    """A sentence saying that (and how) each fold's backbone was pretrained, if it was."""
    pre = result.config.get("training", {}).get("pretrain")
    if not isinstance(pre, dict):
        return ""
    method = {"simclr": "SimCLR", "byol": "BYOL"}.get(str(pre.get("method")), "?")
    epochs = pre.get("epochs", "?")
    return (
        f"\n\nEach fold's {pre.get('backbone', '?')} backbone was first pretrained without "
        f"labels ({method}, {epochs} epoch{'' if epochs == 1 else 's'}) on "
        "that fold's training and validation cells only, never its held-out cells, and the "
        "model started from those weights (`fold_<k>/pretrain/`). The training times below "
        "leave the pretraining out; each fold's `pretrain/pretrain.json` has its own.\n"
    )


def _dataset_table(result: CVResult) -> tuple[str, list[int]]:
    p = result.predictions
    counts = [int(np.sum(p.label == c)) for c in range(len(result.classes))]
    data = result.config.get("data", {})
    split = result.config.get("split", {})
    lines = [
        "| | |",
        "| --- | --- |",
        f"| dataset | {data.get('dataset', '?')} |",
        f"| cells evaluated | {len(p)} |",
        f"| groups (patients / smears) | {len(set(p.group))} |",
        f"| folds | {split.get('n_splits', '?')} (seed {split.get('seed', '?')}, stratified: "
        f"{split.get('stratify', '?')}, grouped: {split.get('grouped', '?')}) |",
    ]
    lines += [f"| class {c} | {n} |" for c, n in zip(result.classes, counts, strict=True)]
    return "\n".join(lines) + "\n", counts


def write_report(
    results: Sequence[CVResult],
    output_dir: str | os.PathLike[str],
    *,
    gallery: Sequence[GalleryItem] = (),
    robustness: Mapping[str, RobustnessResult] | None = None,
    cross_dataset: Sequence[CrossDatasetResult] = (),
    notes: str = "",
    title: str = "White-blood-cell classification: cross-validation report",
) -> ReportFiles:
    """Write ``report.html`` (figures embedded), ``report.md`` with ``figures/``, ``report.json``.

    Sections: dataset and class balance, the split (folds, groups), the comparison table, then
    for each model its per-fold metrics with mean, std and 95 % interval, ROC curves, the
    confusion matrix and training curves; for each model whose folds wrote attributions
    (``CrossValidator(..., attributions=...)``), the nucleus-focus table pooled over folds and a
    gallery of the most confident right and wrong cell per class (a network without them gets a
    line saying how to add them); the attribution gallery given (with each cell's share of
    attribution inside the nucleus); timings; and the environment. Every gallery is the grid of
    :func:`~leukemia_wbc.report.gallery.gallery_figure`: cells as columns; the image, each
    branch's map with a colour bar and the nucleus outline as rows. The report is derived from
    the results, which it never modifies; writing it again replaces it.

    Args:
        results: Cross-validation results on identical folds (the first describes the data).
        output_dir: Folder for the report.
        gallery: Explained cells (see :func:`~leukemia_wbc.evaluation.gallery.attribution_gallery`).
        robustness: Model name to its scores under perturbation (see
            :func:`~leukemia_wbc.evaluation.cv_robustness`): adds a robustness section (accuracy
            against strength, per perturbation) and a stain-shift accuracy column (the lowest
            accuracy under the stain perturbations) to the comparison table.
        cross_dataset: Scores of the models on other datasets (see
            :func:`~leukemia_wbc.evaluation.cross_dataset_test`): adds a cross-dataset section
            beside the cross-validated figures.
        notes: Free text (Markdown paragraphs) placed after the title.
        title: Report title.

    Returns:
        The written :class:`ReportFiles`.

    Raises:
        ValueError: No results, or results on different folds (see ``compare``).
    """
    if not results:
        raise ValueError("write_report needs at least one CVResult")
    out = Path(output_dir)
    shift = {k: v.worst("stain") for k, v in robustness.items()} if robustness else None
    table = compare(results, stain_shift=shift)
    alerts = comparison_warnings(results) + shortcut_warnings(results, shift)
    for alert in alerts:
        _log.warning("%s", alert)
    alert_text = "\n\n".join(f"**Warning:** {a}." for a in alerts)
    data_table, counts = _dataset_table(results[0])
    figures: dict[str, bytes] = {
        "class_balance": class_balance_figure(results[0].classes, counts),
        "folds": folds_figure(results[0]),
    }
    for i, r in enumerate(results):
        figures[f"roc_{i}"] = roc_figure(r)
        figures[f"confusion_{i}"] = confusion_figure(r)
        curves = curves_figure(r)
        if curves is not None:
            figures[f"curves_{i}"] = curves
    if robustness:
        figures["robustness"] = robustness_figure(robustness)
    picture = gallery_figure(gallery)
    if picture is not None:
        figures["gallery"] = picture
    env = environment()
    env_table = "| | |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in env.items())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    # Sections as (heading, markdown text, figure keys).
    sections: list[tuple[str, str, list[str]]] = [
        ("Comparison (mean ± std over folds, with guessing for reference)", table, []),
        ("Dataset and split", data_table, ["class_balance", "folds"]),
    ]
    for i, r in enumerate(results):
        keys = [k for k in (f"roc_{i}", f"confusion_{i}", f"curves_{i}") if k in figures]
        sections.append((r.name, r.to_markdown() + _pretrain_note(r), keys))
    if robustness:
        sections.append(("Robustness to stain and acquisition shift",
                         _robustness_text(results, robustness), ["robustness"]))  # fmt: skip
    if cross_dataset:
        sections.append(("Cross-dataset test", _cross_dataset_text(results, cross_dataset), []))
    attributions = _attribution_sections(results, sections, figures)
    if gallery:
        sections.append(("Attribution gallery", _gallery_table(gallery), ["gallery"]))
    sections += [("Timings", _timings(results), []), ("Environment", env_table, [])]

    fig_dir = out / "figures"
    paths: list[Path] = []
    for key, png in figures.items():
        atomic_write_bytes(fig_dir / f"{key}.png", png)
        paths.append(fig_dir / f"{key}.png")
    md = [f"# {title}", "", f"Generated {stamp}.", ""] + ([alert_text, ""] if alerts else [])
    md += [notes, ""] if notes else []
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Generated {stamp}.</p>"]
    if alerts:
        body.append('<div class="warning">' + _markdown_html(alert_text) + "</div>")
    if notes:
        body.append(_markdown_html(notes))
    for heading, text, keys in sections:
        md += [f"## {heading}", "", text] + [f"![{k}](figures/{k}.png)\n" for k in keys]
        body += [f"<h2>{html.escape(heading)}</h2>", _markdown_html(text)]
        body += [_img(figures[k], k) for k in keys]
    page = _PAGE.format(title=html.escape(title), body="\n".join(body))
    atomic_write_text(out / "report.html", page)
    atomic_write_text(out / "report.md", "\n".join(md))
    summary = {
        "title": title,
        "generated": stamp,
        "classes": list(results[0].classes),
        "models": {
            r.name: {
                "summary": {k: json_safe(asdict(v)) for k, v in r.summary().items()},
                "folds": [json_safe(f.metrics) for f in r.folds],
                "config": r.config,
            }
            for r in results
        },
        "gallery": [
            {
                "index": g.index,
                "path": g.path,
                "fold": g.fold,
                "label": g.label,
                "pred": g.pred,
                "prob": g.prob,
                "nucleus_area": _nan_none(g.nucleus_area),
                "nucleus_share": {k: _nan_none(v) for k, v in g.nucleus_share.items()},
            }
            for g in gallery
        ],
        "attributions": attributions,
        "environment": env,
    }
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2))
    return ReportFiles(out / "report.html", out / "report.md", out / "report.json", paths)


def _robustness_text(results: Sequence[CVResult], robustness: Mapping[str, Any]) -> str:
    """Per model, accuracy (and its change) under each perturbation; the colour shortcut."""
    parts = [
        "Each fold's model on its own held-out images, perturbed with the same seeds for every "
        "model; fold means. The stain-shift accuracy of the comparison table is the lowest "
        "accuracy under the stain perturbations."
    ]
    for r in results:
        if r.model_info.shortcut == "colour":
            parts.append(
                f"Colour shortcut: a classifier on whole-image colour statistics alone reaches "
                f"{r.summary()['accuracy'].format(3)} accuracy on these folds; that much of the "
                "dataset is separable without looking at a cell."
            )
    for name, rob in robustness.items():
        parts += [f"**{name}**", rob.table()]
    return "\n\n".join(parts) + "\n"


def _cross_dataset_text(results: Sequence[CVResult], scores: Sequence[CrossDatasetResult]) -> str:
    """The cross-validated accuracy beside each model's accuracy on another dataset."""
    cv = {r.name: r.summary()["accuracy"].mean for r in results}
    lines = [
        "Every fold's model on all images of another dataset (classes mapped onto the "
        "training classes); mean ± std over folds.",
        "",
        "| Model | Test data | Images | Excluded | Cross-validated accuracy | Accuracy | F1 "
        "| AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for sc in scores:
        s = sc.summary()
        own = f"{cv[sc.name]:.3f}" if sc.name in cv else "n/a"
        lines.append(
            f"| {sc.name} | {sc.target} | {sc.n_images} | {sc.excluded} | {own} | "
            f"{s['accuracy'].format(3)} | {s['f1'].format(3)} | {s['auroc'].format(3)} |"
        )
    return "\n".join(lines) + "\n"


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f0f0f0; }}
img {{ max-width: 100%; margin: 0.5em 0.5em 0.5em 0; vertical-align: top; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }}
.warning {{ border: 2px solid #b00; background: #fff0f0; padding: 0.2em 1em; margin: 1em 0; }}
</style></head>
<body>
{body}
</body></html>
"""
