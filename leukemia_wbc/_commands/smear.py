"""``leukemia-wbc analyze-smear``: whole smears in; cells, counts, blast share and overlays out."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import atomic_write_text, write_png
from .._safe_load import load_torch_file
from ..checkpoint import read_checkpoint
from ..inference import TrainedModel
from ._inference import Inputs, collect_inputs
from ._outputs import check_outputs, per_input
from ._parser import command_parser, flag, parse

__all__ = ["run_analyze_smear", "smear_parser"]

_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
_DESCRIPTION = """Detect the white cells of whole smear images, classify each with a trained
classifier, and report counts per class and the blast share with its confidence interval
against the 20 % threshold of acute leukemia; writes an overlay PNG and a per-cell CSV per
image and summary.csv. CHECKPOINTS: one classifier checkpoint (CellClassifier or
DualBranchClassifier) and, optionally, a detector (a DetectionModule checkpoint or a
create_mask_rcnn state dict, e.g. examples/smear_detection.py's mask_rcnn.pt). Without a
detector the classical detector runs; with one, the hybrid (--method to choose)."""


def _names(value: str | list[str] | None) -> list[str] | None:
    """Class names from a list or a comma-separated string (``ALL,AML``)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return [name.strip() for name in items if name.strip()]


def smear_parser() -> Any:
    """The options of ``leukemia-wbc analyze-smear`` (a ``jsonargparse.ArgumentParser``)."""
    p = command_parser("leukemia-wbc analyze-smear", _DESCRIPTION)
    p.add_argument("paths", nargs="*", type=str, metavar="CHECKPOINTS... IMAGES...",
                   help="checkpoints (.ckpt/.pt/.pth/.safetensors) first, then images, "
                        "folders or .txt/.csv lists")  # fmt: skip
    p.add_argument("--method", type=Literal["auto", "classical", "mask_rcnn", "hybrid"],
                   default="auto",
                   help="detector (auto: hybrid with a detector file, else classical)")  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0,
                   help="resize factor before detection, to the cell size the detector "
                        "was trained on")  # fmt: skip
    p.add_argument("--score_threshold", type=float, default=0.5,
                   help="lowest Mask R-CNN score of a detected cell")  # fmt: skip
    p.add_argument("--margin", type=float, default=0.35,
                   help="crop margin per side, as a share of the cell box side")  # fmt: skip
    p.add_argument("--tile", type=int, default=1024, help="Mask R-CNN tile side")
    p.add_argument("--blast_classes", type=list[str] | str | None, default=None,
                   help="blast classes, a list or comma-separated (default: ALL,AML,blast)",
                   )  # fmt: skip
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence level of the blast-share interval")  # fmt: skip
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=str, default="smear_analysis", help="output folder")
    flag(p, "overwrite", "replace earlier results")
    p.add_argument("--allidb1", type=str | None, default=None, metavar="ROOT",
                   help="also score blast detection on ALL-IDB1 under ROOT")  # fmt: skip
    p.add_argument("--radius", type=float, default=40.0,
                   help="ALL-IDB1 matching radius in original pixels")  # fmt: skip
    return p


def _split(paths: list[str]) -> tuple[str, str | None, list[str]]:
    """The classifier checkpoint, the detector file (or None) and the image inputs."""
    n = 0
    while n < len(paths) and paths[n].lower().endswith(_CHECKPOINT_SUFFIXES):
        n += 1
    checkpoints, images = paths[:n], paths[n:]
    classifier = [c for c in checkpoints if _is_classifier(c)]
    others = [c for c in checkpoints if c not in classifier]
    if len(classifier) != 1 or len(others) > 1:
        raise ValueError(
            "expected one classifier checkpoint (CellClassifier / DualBranchClassifier) and at "
            f"most one detector file before the images; got classifiers {classifier} and "
            f"other files {others}"
        )
    return classifier[0], (others[0] if others else None), images


def _is_classifier(path: str) -> bool:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        read_checkpoint(path)
    except ValueError:
        return False
    return True


def _network(path: str, device: torch.device) -> Any:
    """The Mask R-CNN of a DetectionModule checkpoint or of a plain state dict."""
    from ..smear.mask_rcnn import create_mask_rcnn
    from ..smear.task import DetectionModule

    raw = load_torch_file(
        path, what="a DetectionModule checkpoint or Mask R-CNN weights written by torch.save"
    )
    if isinstance(raw, dict) and "hyper_parameters" in raw and "state_dict" in raw:
        module = DetectionModule.load_from_checkpoint(path, map_location="cpu")
        return module.model.to(device)
    return create_mask_rcnn(weights=path).to(device)


def _detector(args: Any, detector_file: str | None, device: torch.device) -> Any:
    from ..smear.detectors import ClassicalCellDetector, HybridCellDetector
    from ..smear.mask_rcnn import MaskRCNNCellDetector

    method = args.method
    if method == "auto":
        method = "hybrid" if detector_file else "classical"
    if method != "classical" and detector_file is None:
        raise ValueError(f"--method {method} needs a detector file among the checkpoints")
    classical = ClassicalCellDetector()
    if method == "classical":
        return classical
    assert detector_file is not None
    network = MaskRCNNCellDetector(
        _network(detector_file, device), score_threshold=args.score_threshold, tile=args.tile
    )
    return network if method == "mask_rcnn" else HybridCellDetector(classical, network)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def run_analyze_smear(argv: list[str]) -> int:
    """Analyse whole smears: cells, classes, counts, blast share, overlays (see ``--help``).

    Args:
        argv: Arguments after ``analyze-smear``.

    Returns:
        The exit status.

    Raises:
        ValueError: Bad checkpoints or options.
        FileExistsError: Results already in ``--out`` without ``--overwrite``.
    """
    from ..smear.analysis import SmearAnalyzer

    args = parse(smear_parser(), argv)
    args.out = Path(args.out)
    args.blast_classes = _names(args.blast_classes)
    classifier_file, detector_file, inputs = _split(list(args.paths))
    if not inputs and args.allidb1 is None:
        raise ValueError("no images given (and no --allidb1 ROOT): nothing to analyse")
    found = collect_inputs(inputs) if inputs else Inputs([])
    note = found.masks_note()
    if note:
        print(note)
    paths = found.paths
    summary_file = args.out / "summary.csv"
    planned = _check_outputs(args, found, summary_file, [classifier_file, detector_file])
    model = TrainedModel.from_checkpoint(classifier_file, device=args.device)
    analyzer = SmearAnalyzer(
        _detector(args, detector_file, model.device), model,
        blast_classes=args.blast_classes, scale=args.scale, margin=args.margin,
        confidence=args.confidence,
    )  # fmt: skip
    summary: list[dict[str, Any]] = []
    for path in tqdm(paths, desc="smears", unit="image"):
        result = analyzer.analyze(path)
        overlay_file, cells_file = planned[path]
        write_png(overlay_file, result.overlay())
        atomic_write_text(cells_file, _csv(result.to_rows()))
        low, high = result.blast_interval
        summary.append({"path": path, "cells": len(result), **result.counts,
                        "blasts": result.n_blasts, "blast_share": round(result.blast_share, 4),
                        "ci_low": round(low, 4), "ci_high": round(high, 4),
                        "verdict": result.verdict})  # fmt: skip
        print(f"\n{path}\n{result.summary()}")
    if summary:
        atomic_write_text(summary_file, _csv(summary))
        print(f"\n{len(summary)} smears: overlays, per-cell CSVs and {summary_file}")
    if args.allidb1 is not None:
        _allidb1(args, analyzer)
    return 0


def _check_outputs(
    args: Any, found: Inputs, summary_file: Path, checkpoints: list[str | None]
) -> dict[str, list[Path]]:
    """Refuse, before any work, outputs that would collide or replace finished results.

    Returns:
        Each image path's overlay and per-cell CSV (named by its place under its input).
    """
    planned = per_input(found.images, args.out, ("_overlay.png", "_cells.csv"))
    outputs = [f for files in planned.values() for f in files]
    outputs += [summary_file] if found.images else []
    outputs += [args.out / "allidb1.csv"] if args.allidb1 is not None else []
    read = [*found.paths, *found.lists, *(c for c in checkpoints if c is not None)]
    check_outputs(outputs, inputs=read, overwrite=args.overwrite)
    return planned


def _allidb1(args: Any, analyzer: Any) -> None:
    from ..data.allidb import ALLIDB1
    from ..smear.metrics import evaluate_allidb1

    dataset = ALLIDB1(Path(args.allidb1))

    def predict(index: int) -> np.ndarray:
        points: np.ndarray = analyzer.analyze(dataset.records[index].path).blast_centroids()
        return points

    evaluation = evaluate_allidb1(dataset, predict, radius=args.radius)
    atomic_write_text(args.out / "allidb1.csv", _csv(evaluation.to_rows()))
    print(f"\nALL-IDB1 ({len(dataset)} smears, radius {args.radius:g} px)\n{evaluation.summary()}")
