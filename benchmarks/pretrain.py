"""Self-supervised pretraining against random initialisation, same folds, on real cells.

Reference: the same ``CellClassifier`` (ResNet-10-T, 64 px) from random initialisation, in the
same run, on the same 5 grouped stratified folds of segmentation_WBC Dataset 1 (Zheng et al.,
Micron 2018; the one basophil left out). For each fold, ``PretrainModule`` (SimCLR by default)
pretrains the backbone on that fold's training and validation cells only (its test cells are
left out, as ``leukemia-wbc pretrain`` does by default); the classifier then starts from those
weights. Every fold's model is also scored on all of Dataset 2 (another lab; its three
basophils excluded) and on Dataset 1's held-out cells under the strongest stain shift of the
perturbation suite. The colour-shortcut baseline and the majority class run on the same folds.

Run ``python benchmarks/pretrain.py`` (about 25 minutes on 2 CPU cores with the defaults);
``--fast`` is a smoke run. Appends a record to ``benchmarks/results/pretrain.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED_DATA, append_record, environment, two_lab_scores

from leukemia_wbc.data import SegmentationWBC2018, WBCDataModule
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models import ColourShortcutBaseline
from leukemia_wbc.tasks import CellClassifier, PretrainModule


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    p.add_argument("--pretrain_epochs", type=int, default=60)
    p.add_argument("--method", default="simclr", choices=("simclr", "byol"))
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_pretrain"))
    p.add_argument(
        "--weights",
        type=Path,
        help="also a row from these pretrained weights "
        "(one file for every fold, e.g. from `leukemia-wbc pretrain` on other cells)",
    )
    p.add_argument("--no_per_fold", action="store_true", help="skip the per-fold SSL row")
    p.add_argument("--no_random", action="store_true", help="skip the random-init row")
    p.add_argument("--fast", action="store_true")
    args = p.parse_args()
    if args.fast:
        args.size, args.epochs, args.pretrain_epochs, args.folds = 32, 2, 2, 3
    return args


def _cv(model: Any, dm: WBCDataModule, folder: Path, args: argparse.Namespace) -> Any:
    return CrossValidator(
        model, dm, folder, n_splits=args.folds, max_epochs=args.epochs,
        early_stopping_patience=None, accelerator="cpu", precision="auto",
        trainer_kwargs={"enable_progress_bar": False},
    ).run()  # fmt: skip


def _per_fold(args: argparse.Namespace, train: dict[str, Any], data: Any, source: Any,
              target: Any, rows: dict[str, Any], seconds: dict[str, float]) -> None:  # fmt: skip
    """The row of per-fold pretraining (each fold's own training cells, test cells left out)."""
    start = time.perf_counter()
    name = f"{args.method} pretrained per fold"
    result = CrossValidator(
        CellClassifier(args.backbone, **train), data(), args.out / "ssl", n_splits=args.folds,
        max_epochs=args.epochs, early_stopping_patience=None, accelerator="cpu",
        precision="auto", trainer_kwargs={"enable_progress_bar": False},
        pretrain=PretrainModule(args.backbone, method=args.method),
        pretrain_epochs=args.pretrain_epochs,
    ).run()  # fmt: skip
    for fold in range(args.folds):
        summary = json.loads((args.out / "ssl" / f"fold_{fold}" / "pretrain" /
                              "pretrain.json").read_text())  # fmt: skip
        losses = [h["train_loss"] for h in summary["history"] if "train_loss" in h]
        print(f"fold {fold}: pretrained on {summary['train_samples']} cells "
              f"({summary['excluded']} left out), loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
              f"{summary['seconds']:.0f} s")  # fmt: skip
    rows[name] = two_lab_scores(result, source, target)
    seconds[name] = time.perf_counter() - start


def main() -> None:
    """Run the comparison and print the table."""
    args = parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    root = SHARED_DATA / "segmentation_WBC"
    if not root.is_dir():
        raise SystemExit(f"{root} not found: this benchmark needs the real data")
    d1 = SegmentationWBC2018(root, subset="Dataset 1", size=args.size)
    source = d1.subset(np.flatnonzero(d1.labels != d1.classes.index("basophil")))
    target = SegmentationWBC2018(root, subset="Dataset 2", size=args.size)
    train = {"num_classes": 5, "head_hidden": (64,), "lr": 3e-3, "optimizer": "adamw",
             "scheduler": "onecycle", "weight_decay": 0.05}  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}

    def data() -> WBCDataModule:
        return WBCDataModule(source, size=args.size, batch_size=32)

    if not args.no_random:
        start = time.perf_counter()
        result = _cv(CellClassifier(args.backbone, **train), data(), args.out / "random", args)
        rows["random init"] = two_lab_scores(result, source, target)
        seconds["random init"] = time.perf_counter() - start

    if args.weights is not None:
        start = time.perf_counter()
        task = CellClassifier(args.backbone, weights=str(args.weights), **train)
        result = _cv(task, data(), args.out / "weights", args)
        rows[f"pretrained once: {args.weights}"] = two_lab_scores(result, source, target)
        seconds["weights"] = time.perf_counter() - start
    if not args.no_per_fold:
        _per_fold(args, train, data, source, target, rows, seconds)
    result = _cv(ColourShortcutBaseline(progress=False), data(), args.out / "colour", args)
    rows["colour shortcut"] = two_lab_scores(result, source, target)
    labels = source.labels
    majority = np.bincount(labels).max() / len(labels)
    lines = [
        f"segmentation_WBC Dataset 1 ({len(source)} cells, {args.folds}-fold grouped stratified "
        f"CV), {args.backbone} at {args.size} px, {args.epochs} epochs; SSL: {args.method}, "
        f"{args.pretrain_epochs} epochs per fold on the fold's training cells",
        "",
        "| model | Dataset 1 (CV) | Dataset 1, stain shift 1.0 | Dataset 2 (other lab) |",
        "| --- | --- | --- | --- |",
        f"| majority class | {majority:.3f} | | |",
    ]
    for name, r in rows.items():
        acc = np.asarray(r["dataset1"])
        lines.append(f"| {name} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} | "
                     f"{r['stain_shift']:.3f} | {r['dataset2']:.3f} |")  # fmt: skip
    print("\n".join(lines))
    print("seconds:", {k: round(v) for k, v in seconds.items()})
    append_record("pretrain", {"args": {k: str(v) for k, v in vars(args).items()},
                               "rows": rows, "seconds": seconds, "env": environment()})  # fmt: skip


if __name__ == "__main__":
    main()
