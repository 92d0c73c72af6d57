"""Every model of the library on real cells: same folds, with and without physical scale and SSL.

The table of issue 20. On segmentation_WBC Dataset 1 (Zheng et al., Micron 2018; 299 cells,
the one basophil left out), 5 grouped stratified folds, the same for every row: the majority
class, the colour-shortcut baseline, the handcrafted SVM (expert nucleus masks), the
single-branch CNN, the nucleus-only CNN, the dual branch and the dual branch with handcrafted
features. Each model is scored on Dataset 1's held-out cells (CV), on them under the strongest
stain shift of the perturbation suite, and on all of Dataset 2 (another lab, 97 cells; its
three basophils left out), every fold's model on it.

Each row runs with each scale of ``--scales``: ``none`` (each crop resized to ``--size`` as it
is, the library's default) or a physical scale in pixels per micrometre (each crop resampled to
it with its dataset's pixel size, then cut to ``--size``; 3.0 at 64 px is a 21 um field). With
``--ssl``, every deep model is also trained from SimCLR weights pretrained on each fold's own
training and validation cells (its test cells left out); the deep models all use the same
backbone (ResNet-10-T, the dual branch on both branches), so one pretraining per fold and scale
serves every model.

Run ``python benchmarks/real_cells.py`` (see ``--help``; ``--fast`` is a smoke run). Appends a
record to ``benchmarks/results/real_cells.jsonl`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, append_record, environment, two_lab_scores

from leukemia_wbc.data import SegmentationWBC2018, WBCDataModule, WBCDataset
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models import ColourShortcutBaseline, HandcraftedSVM
from leukemia_wbc.tasks import (
    CellClassifier,
    DualBranchClassifier,
    NucleusClassifier,
    OptimConfig,
    PretrainModule,
)

ROWS = ("colour", "svm", "cnn", "nucleus", "dual", "dual_features", "cnn_stain_aug",
        "cnn_consistency", "combined", "recommended", "dual_features_bg")  # fmt: skip
DEEP = ("cnn", "nucleus", "dual", "dual_features", "cnn_stain_aug", "cnn_consistency",
        "combined", "recommended", "dual_features_bg")  # fmt: skip
#: DataModule options of a row (the others: the defaults).
DATA = {
    "cnn_stain_aug": {"stain_augmentation": 0.5},
    "combined": {"background_removal": True},
    "recommended": {"stain_augmentation": 0.5},
    "dual_features_bg": {"background_removal": True},
}
NAMES = {
    "colour": "colour shortcut (whole-image colour statistics)",
    "svm": "handcrafted SVM (expert masks)",
    "cnn": "single-branch CNN",
    "nucleus": "nucleus-only CNN",
    "dual": "dual branch",
    "dual_features": "dual branch + handcrafted features",
    "cnn_stain_aug": "single-branch CNN + stain augmentation 0.5",
    "cnn_consistency": "single-branch CNN + stain consistency 1.0",
    "combined": "dual branch + features + stain consistency 1.0 + background removal",
    "recommended": "dual branch + features + stain augmentation 0.5",
    "dual_features_bg": "dual branch + features + background removal",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``argv``: instead of the command line)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {ROWS}")
    p.add_argument("--scales", default="none,3.0", help="comma list: none or pixels per um")
    p.add_argument("--ssl", action="store_true", help="also each deep model from SSL weights")
    p.add_argument("--ssl_only", action="store_true", help="only the SSL rows of deep models")
    p.add_argument(
        "--pretrained_from",
        type=Path,
        help="a cross-validation folder whose fold_<k>/pretrain holds finished pretrainings of "
        "these folds without physical scale (e.g. benchmarks/pretrain.py's ssl run): reused",
    )
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    p.add_argument("--pretrain_epochs", type=int, default=60)
    p.add_argument("--features", default="all", choices=("all", "shape_texture"))
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_real_cells"))
    p.add_argument("--fast", action="store_true")
    p.add_argument("--no_record", action="store_true", help="append nothing to results/")
    args = p.parse_args(argv)
    if args.fast:
        args.size, args.epochs, args.pretrain_epochs, args.folds = 32, 1, 1, 3
    return args


def _train_kwargs() -> dict[str, Any]:
    optim = OptimConfig(lr=3e-3, optimizer="adamw", scheduler="onecycle", weight_decay=0.05)
    return {"num_classes": 5, "head_hidden": (64,), "optim": optim}


def _model(row: str, args: argparse.Namespace) -> Any:
    """A fresh model of ``row``."""
    train = _train_kwargs()
    if row == "colour":
        return ColourShortcutBaseline(progress=False)
    if row == "svm":
        return HandcraftedSVM(progress=False)
    if row in ("cnn", "cnn_stain_aug"):
        return CellClassifier(args.backbone, **train)
    if row == "cnn_consistency":
        return CellClassifier(args.backbone, consistency=1.0, **train)
    if row == "nucleus":
        return NucleusClassifier(args.backbone, nucleus_size=args.size, **train)
    features = (
        args.features
        if row.startswith("dual_features") or row in ("combined", "recommended")
        else None
    )
    consistency = 1.0 if row == "combined" else 0.0
    return DualBranchClassifier(args.backbone, args.backbone, nucleus_size=args.size,
                                fusion_features=128, dropout=0.3, features=features,
                                consistency=consistency, **train)  # fmt: skip


def _share_pretraining(source: Path | None, folder: Path, folds: int) -> None:
    """Copy each fold's finished pretraining into a new run's folder (same cells, backbone)."""
    if source is None:
        return
    for k in range(folds):
        done = source / f"fold_{k}" / "pretrain"
        if (done / "backbone.pt").is_file() and not (folder / f"fold_{k}" / "pretrain").exists():
            shutil.copytree(done, folder / f"fold_{k}" / "pretrain")


def _run(row: str, scale: float | None, ssl: bool, args: argparse.Namespace,
         data: Callable[..., WBCDataModule], shared: dict[Any, Path]) -> Any:  # fmt: skip
    tag = f"{row}_{'none' if scale is None else scale}{'_ssl' if ssl else ''}"
    folder = args.out / tag
    extra: dict[str, Any] = {}
    if ssl:
        _share_pretraining(shared.get(scale), folder, args.folds)
        extra = {"pretrain": PretrainModule(args.backbone), "pretrain_epochs": args.pretrain_epochs}
    result = CrossValidator(
        _model(row, args), data(**DATA.get(row, {})), folder, n_splits=args.folds,
        max_epochs=args.epochs, early_stopping_patience=None, accelerator="cpu", precision="auto",
        trainer_kwargs={"enable_progress_bar": False}, **extra,
    ).run()  # fmt: skip
    if ssl:
        shared.setdefault(scale, folder)
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the rows, print the table and return each row's scores (by row name | scale)."""
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    root = SHARED_DATA / "segmentation_WBC"
    if not root.is_dir():
        raise SystemExit(f"{root} not found: this benchmark needs the real data")
    d1 = SegmentationWBC2018(root, subset="Dataset 1", size=args.size)
    source = d1.subset(np.flatnonzero(d1.labels != d1.classes.index("basophil")))
    target = SegmentationWBC2018(root, subset="Dataset 2", size=args.size)
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; expected some of {ROWS}")
    scales = [None if s == "none" else float(s) for s in args.scales.split(",")]
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    shared: dict[Any, Path] = {} if args.pretrained_from is None else {None: args.pretrained_from}
    for scale in scales:
        view = source if scale is None else source.with_scale(scale)
        target_view = target if scale is None else target.with_scale(scale)

        def data(view: WBCDataset = view, **options: Any) -> WBCDataModule:
            return WBCDataModule(view, size=None, batch_size=32, **options)

        for row in rows:
            inits = [False] if row not in DEEP else ([True] if args.ssl_only else [False])
            if row in DEEP and args.ssl and not args.ssl_only:
                inits.append(True)
            for ssl in inits:
                name = f"{NAMES[row]}{', SSL per fold' if ssl else ''}"
                key = f"{name} | {'as is' if scale is None else f'{scale:g} px/um'}"
                start = time.perf_counter()
                result = _run(row, scale, ssl, args, data, shared)
                results[key] = two_lab_scores(result, view, target_view)
                seconds[key] = time.perf_counter() - start
                r = results[key]
                print(f"{key}: D1 {np.mean(r['dataset1']):.3f}, shift {r['stain_shift']:.3f}, "
                      f"D2 {r['dataset2']:.3f} ({seconds[key]:.0f} s)", flush=True)  # fmt: skip
    labels = source.labels
    majority = np.bincount(labels).max() / len(labels)
    target_labels = target.labels[target.labels != target.classes.index("basophil")]
    majority_d2 = float(np.mean(target_labels == np.bincount(labels).argmax()))
    lines = [
        f"segmentation_WBC Dataset 1 ({len(source)} cells, {args.folds}-fold grouped "
        f"stratified CV, the same folds for every row), {args.size} px, {args.epochs} epochs, "
        f"{args.backbone}; SSL: SimCLR, {args.pretrain_epochs} epochs per fold",
        "",
        "| model | scale | Dataset 1 (CV) | balanced | stain shift 1.0 | Dataset 2 (other lab) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| majority class | | {majority:.3f} | {1 / len(np.unique(labels)):.3f} | | "
        f"{majority_d2:.3f} |",
    ]
    for key, r in results.items():
        name, scale_text = key.split(" | ")
        acc, bal = np.asarray(r["dataset1"]), np.asarray(r["dataset1_balanced"])
        lines.append(f"| {name} | {scale_text} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} | "
                     f"{bal.mean():.3f} | {r['stain_shift']:.3f} | "
                     f"{r['dataset2']:.3f} |")  # fmt: skip
    print("\n".join(lines))
    print("seconds:", {k: round(v) for k, v in seconds.items()})
    print(f"total: {sum(seconds.values()) / 60:.1f} min")
    if not args.no_record:
        append_record("real_cells", {"args": {k: str(v) for k, v in vars(args).items()},
                                     "rows": results, "seconds": seconds, "env": environment(),
                                     "majority": {"dataset1": majority,
                                                  "dataset2": majority_d2}})  # fmt: skip
    return results


if __name__ == "__main__":
    main()
