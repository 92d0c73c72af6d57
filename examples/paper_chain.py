"""The paper's two-stage chain on real cells: a U-Net from one lab segments the other lab's cells.

The real segmentation_WBC release (Zheng et al. 2018) holds two collections from different labs,
stains and cameras, each with expert nucleus masks and five white-cell classes. This script runs
the chain from the library's front door (``leukemia-wbc`` through :func:`leukemia_wbc.cli.main`),
printing every command it runs:

1. ``leukemia-wbc fit --config segmentation_unet`` on Dataset 1's masks writes ``unet.ckpt``;
2. the U-Net's nucleus Dice on every Dataset 2 cell against the expert masks, beside the
   classical k-means segmenter's (the images as the classifiers' segmenter sees them: decoded
   and resized, before the device pipeline);
3. ``leukemia-wbc cv`` on Dataset 2's cells (grouped folds; the release has no patient ids, so
   every image is its own group) for the dual branch with the U-Net's masks (``--config
   paper_dual_branch --model.init_args.segmenter unet.ckpt --model.init_args.mask_source
   segmenter``), the same with k-means masks and with the expert masks, the single-branch
   ResNet, and the SVM on handcrafted features from the U-Net's and the expert masks; every
   network uses the paper config's preprocessing (Macenko, CLAHE, background removal,
   augmentation) and loss;
4. the table (accuracy, balanced accuracy, macro F1 and macro AUC as mean ± std over folds,
   with the majority-class row) into ``OUT/paper_chain.md`` and ``OUT/paper_chain.json``.

On a CPU the networks are smaller members of the paper's families (``--cell-backbone``,
``--nucleus-backbone``, ``--size``); on a GPU pass the paper's (``resnet50``,
``mobilenetv2_100``, 224). Dataset 2 has three basophils, so it allows three folds at most.

Run ``python examples/paper_chain.py`` (about an hour on 2 CPU cores), or ``--fast`` for a
smoke run of a few minutes. Finished stages are kept: running again resumes. The data root
defaults to ``../shared/data/segmentation_WBC`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from leukemia_wbc.cli import main
from leukemia_wbc.data import SegmentationWBC2018
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models.segmenter import load_segmenter, resolve_segmenter

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation_WBC"


def leukemia_wbc(*argv: str) -> None:
    """Run one ``leukemia-wbc`` command (printed first); stop on failure."""
    print("$ leukemia-wbc " + shlex.join(argv), flush=True)
    status = main(list(argv))
    if status != 0:
        raise SystemExit(f"leukemia-wbc {argv[0]} failed with status {status}")


def train_unet(args: argparse.Namespace) -> Path:
    """Stage 1: the U-Net on the source lab's expert masks (kept when already there).

    The packaged config writes its best epoch to ``runs/segmentation_unet/unet.ckpt`` under the
    working directory, which is ``OUT`` here.
    """
    checkpoint = args.out / "runs" / "segmentation_unet" / "unet.ckpt"
    if checkpoint.is_file():
        print(f"U-Net: {checkpoint} kept (delete it to train again)")
        return checkpoint
    here = Path.cwd()
    os.chdir(args.out)
    try:
        leukemia_wbc(
            "fit", "--config", "segmentation_unet",
            "--data.init_args.dataset.init_args.root", str(args.root.resolve()),
            "--data.init_args.dataset.init_args.subset", args.source,
            "--data.init_args.size", str(args.size),
            "--data.init_args.num_workers", "0",
            "--model.init_args.encoder", args.encoder,
            "--trainer.max_epochs", str(args.unet_epochs),
            "--trainer.enable_progress_bar", "false",
        )  # fmt: skip
    finally:
        os.chdir(here)
    return checkpoint


def dice_table(args: argparse.Namespace, unet: Path) -> dict[str, float]:
    """Stage 2: mean per-image nucleus Dice on every target-lab cell, U-Net and k-means."""
    data = SegmentationWBC2018(args.root, subset=args.target, size=args.size)
    images = torch.stack([data[i]["image"] for i in range(len(data))]).float() / 255
    truth = torch.stack([data[i]["mask"] for i in range(len(data))]) > 0
    scores = {}
    for name, segmenter in (
        ("U-Net", load_segmenter(unet)),
        ("k-means", resolve_segmenter("kmeans")),
    ):
        assert segmenter is not None
        with torch.no_grad():
            pred = torch.cat([segmenter(images[i : i + 16]) for i in range(0, len(images), 16)]) > 0
        inter = (pred & truth).sum(dim=(1, 2, 3)).float()
        total = (pred.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3))).float()
        dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        scores[name] = float(dice.mean())
        print(f"{name} nucleus Dice on {args.target} ({len(data)} cells): {scores[name]:.3f}")
    return scores


def runs(args: argparse.Namespace, unet: Path) -> dict[str, list[str]]:
    """Stage 3's models: row name to ``leukemia-wbc cv`` arguments."""
    data = [
        "--config", "segmentation_wbc",
        "--data.dataset.init_args.root", str(args.root),
        "--data.dataset.init_args.subset", args.target,
        "--data.size", str(args.size), "--data.batch_size", "16", "--data.num_workers", "0",
        "--cv.n_splits", "3", "--cv.max_epochs", str(args.epochs),
        "--cv.early_stopping_patience", str(args.patience),
    ]  # fmt: skip
    nets = [
        "--model.init_args.optim.lr", str(args.lr),
        "--cv.trainer_kwargs", json.dumps({"enable_progress_bar": False, "log_every_n_steps": 1}),
    ]  # fmt: skip
    dual = [
        "--config", "paper_dual_branch", *data, *nets,
        "--model.init_args.cell_backbone", args.cell_backbone,
        "--model.init_args.nucleus_backbone", args.nucleus_backbone,
        "--model.init_args.nucleus_size", str(max(32, args.size // 2)),
        "--model.init_args.fusion_features", "128", "--model.init_args.head_hidden", "[128]",
        "--cv.attributions", "gradcam" if not args.fast else "null",
    ]  # fmt: skip
    chain = ["--model.init_args.segmenter", str(unet), "--model.init_args.mask_source", "segmenter"]
    # the SVM selects nothing on a validation part: a small one (the same test folds) leaves
    # it the two training basophils that its probability calibration needs
    svm = ["--config", "svm_baseline", *data, "--cv.val_fraction", "0.03"]
    return {
        "Dual branch, U-Net masks (the paper's chain)": [*dual, *chain],
        "Dual branch, k-means masks": [*dual, "--model.init_args.segmenter", "kmeans",
                                       "--model.init_args.mask_source", "segmenter"],
        "Dual branch, expert masks": [*dual, "--model.init_args.segmenter", "null"],
        "Single branch (cell only)": [
            "--config", "resnet50_baseline", *data, *nets,
            "--model.init_args.backbone", args.cell_backbone,
            "--model.init_args.head_hidden", "[128]",
        ],
        "SVM, U-Net masks": [*svm, *chain],
        "SVM, expert masks": [*svm, "--model.init_args.segmenter", "null"],
    }  # fmt: skip


def scores(folder: Path) -> dict[str, Any]:
    """Fold means ± std of a finished cross-validation, with balanced accuracy."""
    result = CrossValidator.collect(folder)
    summary = result.summary()
    p = result.predictions
    balanced = [
        balanced_accuracy_score(p.label[p.fold == f.fold], p.probs[p.fold == f.fold].argmax(1))
        for f in result.folds
    ]
    keys = [key for key in ("accuracy", "f1", "auroc") if key in summary]
    row: dict[str, Any] = {key: summary[key].format() for key in keys}
    row["balanced_accuracy"] = f"{np.mean(balanced):.3f} ± {np.std(balanced, ddof=1):.3f}"
    return row


def majority(folder: Path) -> dict[str, str]:
    """The majority-class row on the same folds (the training part's most frequent class)."""
    p = CrossValidator.collect(folder).predictions
    acc, bal, f1 = [], [], []
    for fold in sorted(set(p.fold.tolist())):
        test, train = p.fold == fold, p.fold != fold
        guess = np.bincount(p.label[train]).argmax()
        pred = np.full(int(test.sum()), guess)
        acc.append(float((pred == p.label[test]).mean()))
        bal.append(balanced_accuracy_score(p.label[test], pred))
        f1.append(f1_score(p.label[test], pred, average="macro", labels=range(len(p.classes))))
    fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"  # noqa: E731
    return {"accuracy": fmt(acc), "f1": fmt(f1), "auroc": "0.500", "balanced_accuracy": fmt(bal)}


def main_(argv: list[str] | None = None) -> None:
    """Run the chain (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=Path("runs/paper_chain"))
    parser.add_argument("--source", default="Dataset 1", help="the U-Net's lab")
    parser.add_argument("--target", default="Dataset 2", help="the classified lab")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--encoder", default="tu-mobilenetv2_050", help="the U-Net's encoder")
    parser.add_argument("--unet-epochs", type=int, default=40)
    parser.add_argument("--cell-backbone", default="resnet10t")
    parser.add_argument("--nucleus-backbone", default="mobilenetv3_small_050")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="a smoke run: 32 px, 1 epoch")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.fast:
        args.size, args.unet_epochs, args.epochs, args.patience = 32, 1, 1, 1
    if not args.root.is_dir():
        raise SystemExit(f"--root {args.root} is not a folder (segmentation_WBC)")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    unet = train_unet(args)
    dice = dice_table(args, unet)
    rows: dict[str, dict[str, Any]] = {}
    for name, cv_args in runs(args, unet).items():
        folder = args.out / name.split(" (")[0].lower().replace(", ", "_").replace(" ", "_")
        leukemia_wbc("cv", *cv_args, "--cv.output_dir", str(folder), "--report", "false")
        rows[name] = scores(folder)
    rows["Majority class (same folds)"] = majority(folder)
    header = "| model | accuracy | balanced accuracy | macro F1 | macro AUC |"
    lines = [header, "| --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['accuracy']} | {row['balanced_accuracy']} | "
                     f"{row['f1']} | {row.get('auroc', '')} |")  # fmt: skip
    dice_line = ", ".join(f"{k} {v:.3f}" for k, v in dice.items())
    text = (f"Nucleus Dice on {args.target} (U-Net trained on {args.source}): {dice_line}\n\n"
            + "\n".join(lines) + "\n")  # fmt: skip
    print("\n" + text)
    (args.out / "paper_chain.md").write_text(text, encoding="utf-8")
    summary = {"dice": dice, "models": rows, "settings": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "paper_chain.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main_()
