"""Nucleus segmentation quality on the real segmentation_WBC data (issue 4, section 2).

Prints two tables:

1. mean per-image nucleus Dice of each classical method
   (:class:`~leukemia_wbc.models.ClassicalNucleusSegmenter`) on Dataset 1 and Dataset 2, at
   224x224, against the expert masks;
2. a U-Net (:class:`~leukemia_wbc.tasks.SegmentationModule`) trained on one dataset and tested
   on the other (cross-domain: different labs, stains and scanners), without and with Macenko
   stain normalisation (``WBCDataModule(stain_normalization=True)``: the target is fitted on
   training images only, and every image, test included, is normalised to it). The source
   dataset is split 80 / 20 into training and validation images; the whole other dataset is
   the test set. Dice is shown raw (threshold 0.5) and after
   :func:`~leukemia_wbc.models.postprocess_masks` (largest central component, as
   ``predict_step`` does; and every component touching the centre).

Run ``python examples/segmentation_quality.py`` (about 15 minutes on 2 CPU cores with the
defaults), or ``--fast`` for a smoke run of a minute or two. ``--out DIR`` also writes the
figures as ``DIR/segmentation_quality.json``. The data root defaults to
``../shared/data/segmentation_WBC`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torchmetrics.functional.segmentation import dice_score
from tqdm import tqdm

from leukemia_wbc.data import SegmentationWBC2018, WBCDataModule
from leukemia_wbc.data.splits import Split, holdout_split
from leukemia_wbc.models import ClassicalNucleusSegmenter, postprocess_masks
from leukemia_wbc.models.segmentation import ClassicalMethod
from leukemia_wbc.tasks import OptimConfig, SegmentationModule

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation_WBC"
SUBSETS = ("Dataset 1", "Dataset 2")
METHODS: tuple[ClassicalMethod, ...] = (
    "kmeans", "watershed", "multiotsu_darkness", "otsu_saturation", "otsu_hematoxylin",
)  # fmt: skip


def mean_dice(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image nucleus Dice of (B, 1, H, W) binary masks."""
    scores = dice_score(pred[:, 0].long(), (target[:, 0] > 0).long(), num_classes=2,
                        include_background=False, input_format="index")  # fmt: skip
    return scores.nan_to_num(1.0).tolist()  # both empty: a perfect match


def classical_table(root: Path, step: int, batch: int) -> dict[str, dict[str, float]]:
    """Mean Dice of every classical method on every subset (every ``step``-th image)."""
    data = {}
    for subset in SUBSETS:
        ds = SegmentationWBC2018(root, subset=subset, size=224)
        samples = [ds[i] for i in range(0, len(ds), step)]
        data[subset] = (torch.stack([s["image"] for s in samples]),
                        torch.stack([s["mask"] for s in samples]))  # fmt: skip
    table: dict[str, dict[str, float]] = {}
    jobs = [(m, s) for m in METHODS for s in SUBSETS]
    for method, subset in tqdm(jobs, desc="classical methods", unit="set"):
        segmenter = ClassicalNucleusSegmenter(method)
        images, masks = data[subset]
        scores: list[float] = []
        for i in range(0, len(images), batch):
            scores += mean_dice(segmenter(images[i : i + batch]), masks[i : i + batch])
        table.setdefault(method, {})[subset] = float(np.mean(scores))
    return table


def cross_domain_split(ds: SegmentationWBC2018, source: str, seed: int) -> Split:
    """Train / validation from ``source`` (stratified 80 / 20), test = the other dataset."""
    sources = np.array(ds.sources)
    src, tgt = np.flatnonzero(sources == source), np.flatnonzero(sources != source)
    part = holdout_split(ds.labels[src], val_fraction=0.2, test_fraction=0.0, seed=seed)
    return Split(train=src[part.train], val=src[part.val], test=tgt)


@torch.no_grad()
def evaluate(model: SegmentationModule, dm: WBCDataModule) -> dict[str, float]:
    """Raw and post-processed mean Dice on the test part."""
    model.eval()
    scores: dict[str, list[float]] = {"raw": [], "post_largest": [], "post_all": []}
    for batch in dm.test_dataloader():
        batch.pop("skipped", None)
        batch = dm.device_transform(batch, train=False)
        probs = model(batch["image"]).sigmoid()
        scores["raw"] += mean_dice((probs > 0.5).to(torch.uint8), batch["mask"])
        for keep in ("largest", "all"):
            post = postprocess_masks(probs, keep=keep)  # type: ignore[arg-type]
            scores[f"post_{keep}"] += mean_dice(post, batch["mask"])
    return {k: float(np.mean(v)) for k, v in scores.items()}


def train_cross_domain(args: argparse.Namespace, source: str, stain: bool) -> dict[str, Any]:
    """Train on ``source``, test on the other dataset; the figures of one table row."""
    pl.seed_everything(args.seed, verbose=False)
    ds = SegmentationWBC2018(args.root, size=args.size)
    dm = WBCDataModule(
        ds, size=args.size, batch_size=args.batch_size, split=cross_domain_split(ds, source,
        args.seed), stain_normalization=stain, augment=True, seed=args.seed,
    )  # fmt: skip
    model = SegmentationModule(
        args.arch, args.encoder, net_kwargs=args.net_kwargs, optim=OptimConfig(lr=args.lr),
        encoder_weights=args.encoder_weights,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_steps=args.steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        enable_progress_bar=not args.quiet,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, dm)
    val = trainer.validate(model, dm, verbose=False)[0]
    row = {"val_dice_source": val["val_dice"], **evaluate(model, dm)}
    row["seconds"] = time.perf_counter() - start
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="segmentation_WBC folder")
    parser.add_argument("--fast", action="store_true", help="quick smoke run (subsets, few steps)")
    parser.add_argument("--size", type=int, default=128, help="U-Net image size (px)")
    parser.add_argument("--steps", type=int, default=400, help="U-Net training steps per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="tu-mobilenetv2_050")
    parser.add_argument("--encoder-weights", type=Path, default=None,
                        help="start the encoder from this file (e.g. `leukemia-wbc pretrain`'s "
                             "backbone.pt of the encoder's architecture)")  # fmt: skip
    parser.add_argument(
        "--sources",
        default="Dataset 1,Dataset 2",
        help="comma-separated training datasets (the other is the test set)",
    )
    parser.add_argument("--stain", default="off,on", help="stain normalisation settings to run")
    parser.add_argument("--no-classical", action="store_true", help="skip the classical table")
    parser.add_argument("--depth", type=int, default=3, help="encoder depth (U-Net stages)")
    parser.add_argument("--width", type=int, default=8, help="channels of the last decoder stage")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.fast:
        args.size, args.steps = 64, 10
    decoder = [args.width * 2 ** (args.depth - 1 - i) for i in range(args.depth)]
    args.net_kwargs = {"encoder_depth": args.depth, "decoder_channels": decoder}
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    start = time.perf_counter()
    step = 10 if args.fast else 1
    classical = {} if args.no_classical else classical_table(args.root, step=step, batch=25)
    if classical:
        print(f"\nClassical nucleus segmentation: mean per-image Dice, 224x224"
              f"{f', every {step}th image' if step > 1 else ', all images'}")  # fmt: skip
        print(f"{'method':22s} {'Dataset 1':>10s} {'Dataset 2':>10s}")
    for method, row in classical.items():
        print(f"{method:22s} {row['Dataset 1']:10.3f} {row['Dataset 2']:10.3f}")

    unet: dict[str, dict[str, Any]] = {}
    sources = [x.strip() for x in args.sources.split(",")]
    stains = [{"off": False, "on": True}[x.strip()] for x in args.stain.split(",")]
    for source in sources:
        for stain in stains:
            target = SUBSETS[1 - SUBSETS.index(source)]
            key = f"{source} -> {target}, stain normalisation {'on' if stain else 'off'}"
            print(f"\n== U-Net: {key}", flush=True)
            unet[key] = train_cross_domain(args, source, stain)
    print(f"\nU-Net cross-domain nucleus Dice (mean per test image): {args.arch}, encoder "
          f"{args.encoder} ({args.encoder_weights or 'random init'}), {args.net_kwargs}, "
          f"{args.size} px, {args.steps} steps "
          f"of batch {args.batch_size}, Adam lr {args.lr}, paper augmentation, source split "
          f"80/20 train/val, seed {args.seed}, {torch.get_num_threads()} threads")  # fmt: skip
    header = f"{'train -> test, stain normalisation':48s} {'raw':>6s} {'post':>6s} {'post*':>6s}"
    print(f"{header} {'src val':>8s} {'time':>6s}")
    for key, row in unet.items():
        print(f"{key:48s} {row['raw']:6.3f} {row['post_largest']:6.3f} {row['post_all']:6.3f} "
              f"{row['val_dice_source']:8.3f} {row['seconds']:5.0f}s")  # fmt: skip
    print("raw: threshold 0.5; post: largest central component, holes filled (predict_step); "
          "post*: every component touching the centre; src val: raw Dice on the source "
          "dataset's validation images (in-domain reference)")  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s")
    result = {"classical": classical, "unet": unet, "settings": {
        k: v for k, v in vars(args).items() if k not in ("root", "out")}}  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "segmentation_quality.json").write_text(
            json.dumps(result, indent=2, default=str)
        )
    return result


if __name__ == "__main__":
    main()
