"""How much of the accuracy survives a change of lab? Recipes against the stain shortcut (issue 8).

The real segmentation_WBC release (Zheng et al. 2018) holds two collections from different
labs, stains and cameras: Dataset 1 (300 cells) and Dataset 2 (100 cells), with the same five
white-cell classes. For each training recipe, a small CNN (``CellClassifier``, ResNet-10-T from
random initialisation) is cross-validated on Dataset 1 and every fold's model is then tested on
all of Dataset 2 (:func:`~leukemia_wbc.evaluation.cross_dataset_test`). Printed per recipe:

* the cross-validated accuracy on Dataset 1;
* the accuracy on Dataset 1's held-out cells under the strongest synthetic stain shift of the
  perturbation suite (the lower of stain rotation and stain concentration at strength 1;
  :func:`~leukemia_wbc.evaluation.cv_robustness`);
* the accuracy on Dataset 2 (the real shift), and the drop from Dataset 1.

Recipes: plain RGB; Macenko stain normalisation; stain augmentation (0.2); grayscale input;
hematoxylin-only input; the nucleus alone (``NucleusClassifier``); the paper's other
preprocessing steps (CLAHE, background removal) and all three of its steps together (Macenko,
CLAHE, background removal); ``--recipes`` runs some.
The colour-shortcut baseline (whole-image colour statistics only)
runs under the same folds. The one basophil of Dataset 1 is left out (a class needs a cell in
every fold); Dataset 2's three basophils are excluded from its test likewise.

Run ``python examples/stain_shift.py`` (about 10 minutes on 2 CPU cores), or ``--fast`` for a
smoke run. The data root defaults to ``../shared/data/segmentation_WBC`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leukemia_wbc.data import SegmentationWBC2018, WBCDataModule
from leukemia_wbc.evaluation import cross_dataset_test, cv_robustness
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models import ColourShortcutBaseline
from leukemia_wbc.tasks import CellClassifier, NucleusClassifier

SHORTCUT = "colour shortcut (baseline)"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation_WBC"
RECIPES: dict[str, dict[str, Any]] = {
    "RGB (no recipe)": {},
    "stain normalisation": {"stain_normalization": True},
    "stain augmentation 0.2": {"stain_augmentation": 0.2},
    "grayscale input": {"colour": "grayscale"},
    "hematoxylin-only input": {"colour": "hematoxylin"},
    "nucleus only": {},  # NucleusClassifier: the segmented nucleus alone
    "CLAHE": {"equalize": "clahe"},
    "background removal": {"background_removal": True},
    # the paper's preprocessing, as in the packaged paper_dual_branch config
    "paper preprocessing": {
        "stain_normalization": True,
        "equalize": "clahe",
        "background_removal": True,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--out", type=Path, default=Path("runs/stain_shift"))
    p.add_argument("--fast", action="store_true", help="two recipes, few epochs, small images")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--recipes", help="comma-separated recipe names to run (default: all)")
    args = p.parse_args(argv)
    if args.fast:
        args.size, args.epochs = 32, 2
    return args


def _source(root: Path, size: int) -> Any:
    d1 = SegmentationWBC2018(root, subset="Dataset 1", size=size)
    return d1.subset(np.flatnonzero(d1.labels != d1.classes.index("basophil")))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every recipe and print the comparison."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if (args.out / "stain_shift.json").exists():
        raise SystemExit(f"{args.out / 'stain_shift.json'} exists; choose another --out")
    source = _source(args.root, args.size)
    target = SegmentationWBC2018(args.root, subset="Dataset 2", size=args.size)
    recipes = dict(list(RECIPES.items())[:2]) if args.fast else RECIPES
    if args.recipes:
        chosen = [r.strip() for r in args.recipes.split(",")]
        unknown = [r for r in chosen if r not in RECIPES and r != SHORTCUT]
        if unknown:
            raise SystemExit(f"unknown recipes {unknown}; choose from {[*RECIPES, SHORTCUT]}")
        recipes = {r: RECIPES[r] for r in chosen if r in RECIPES}
    rows: dict[str, dict[str, float]] = {}
    train = {"num_classes": 5, "head_hidden": (64,), "lr": 3e-3, "optimizer": "adamw",
             "scheduler": "onecycle", "weight_decay": 0.05}  # fmt: skip
    runs: list[tuple[str, Any, dict[str, Any]]] = [
        (
            name,
            NucleusClassifier("resnet10t", nucleus_size=args.size, **train)
            if name == "nucleus only"
            else CellClassifier("resnet10t", **train),
            kw,
        )
        for name, kw in recipes.items()
    ]
    if not args.recipes or SHORTCUT in args.recipes:
        runs.append((SHORTCUT, ColourShortcutBaseline(progress=False), {}))
    for name, model, kwargs in runs:
        dm = WBCDataModule(source, size=args.size, batch_size=32, **kwargs)
        folder = args.out / name.split(" (")[0].replace(" ", "_")
        result = CrossValidator(
            model, dm, folder, n_splits=args.folds, max_epochs=args.epochs,
            early_stopping_patience=None, accelerator="cpu",
            trainer_kwargs={"enable_progress_bar": not args.quiet},
        ).run()  # fmt: skip
        shift = cv_robustness(result, source, progress=False,
                              perturbations=("stain_rotation", "stain_concentration"),
                              strengths=(1.0,))  # fmt: skip
        other = cross_dataset_test(result, target, class_map={"basophil": None},
                                   progress=False)  # fmt: skip
        d1 = result.summary()["accuracy"].mean
        d2 = other.summary()["accuracy"].mean
        rows[name] = {"dataset1_cv": d1, "dataset1_stain_shift": shift.worst("stain"),
                      "dataset2": d2, "drop": d1 - d2,
                      "dataset1_f1": result.summary()["f1"].mean,
                      "dataset2_f1": other.summary()["f1"].mean}  # fmt: skip
    lines = [
        f"Train on segmentation_WBC Dataset 1 ({len(source)} cells, {args.folds}-fold CV), "
        f"test on Dataset 2 ({len(target)} cells, another lab); {args.size} px, "
        f"{args.epochs} epochs; accuracy (fold means):",
        "",
        "| recipe | Dataset 1 (CV) | Dataset 1, synthetic stain shift | Dataset 2 | drop |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['dataset1_cv']:.3f} | {r['dataset1_stain_shift']:.3f} | "
                     f"{r['dataset2']:.3f} | {r['drop']:+.3f} |")  # fmt: skip
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stain_shift.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
