"""White-cell instance segmentation of whole smears: classical, Mask R-CNN and hybrid (issue 7).

Trains the lightweight Mask R-CNN (:class:`~leukemia_wbc.smear.DetectionModule`, random
initialisation) on :class:`~leukemia_wbc.smear.SyntheticSmear` fields, then compares on held-out
fields of other synthetic patients (another seed, so other stains):

* ``classical``: :class:`~leukemia_wbc.smear.ClassicalCellDetector` (optical density, Otsu,
  watershed; no training);
* ``mask_rcnn``: the trained network alone;
* ``hybrid``: :class:`~leukemia_wbc.smear.HybridCellDetector`, the two merged.

It prints one table of nucleus-mask AP (COCO 0.5:0.95), AP50, AP75 and AR100 on all cells and
on the cells that touch or overlap another white cell, and writes ``OUT/detectors.md``,
``OUT/detectors.json`` and the trained network ``OUT/mask_rcnn.pt`` (a state dict for
``create_mask_rcnn(weights=...)``, and the detector file of ``leukemia-wbc analyze-smear``).

``--weights FILE`` evaluates a trained network instead of training one, and
``--test-pixels-per-um`` draws the held-out fields at another magnification (training: 4).

The defaults (800 training fields of 512x512, 20 epochs) suit a GPU. ``--fast`` is a smoke run
of a minute on a CPU; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from leukemia_wbc.smear import DETECTION_OPTIM, SyntheticSmear, detection_collate
from leukemia_wbc.smear.detectors import ClassicalCellDetector, HybridCellDetector
from leukemia_wbc.smear.mask_rcnn import MaskRCNNCellDetector, create_mask_rcnn
from leukemia_wbc.smear.scoring import compare_detectors, detector_table
from leukemia_wbc.smear.task import DetectionModule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-fields", type=int, default=800)
    p.add_argument("--val-fields", type=int, default=48)
    p.add_argument("--test-fields", type=int, default=96)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--max-minutes", type=float, default=0, help="stop training after (0: no)")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--out", type=Path, default=Path("runs/smear_detection"))
    p.add_argument("--weights", type=Path, help="evaluate this trained network; no training")
    p.add_argument("--test-pixels-per-um", type=float, default=4.0,
                   help="scale of the held-out fields (training: 4); the classical detector's "
                        "sizes follow it")  # fmt: skip
    p.add_argument("--fast", action="store_true", help="tiny smoke run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's results")
    args = p.parse_args(argv)
    if args.fast:
        args.train_fields, args.val_fields, args.test_fields = 8, 2, 3
        args.size, args.epochs, args.batch_size = 256, 1, 2
    return args


def loaders(args: argparse.Namespace) -> tuple[DataLoader[dict], DataLoader[dict], SyntheticSmear]:  # type: ignore[type-arg]
    """Training and validation loaders, and the held-out test fields."""
    common = {"size": args.size, "n_patients": 12}
    train = SyntheticSmear(args.train_fields, seed=0, **common)  # type: ignore[arg-type]
    val = SyntheticSmear(args.val_fields, seed=1, **common)  # type: ignore[arg-type]
    test = SyntheticSmear(args.test_fields, seed=2, pixels_per_um=args.test_pixels_per_um,
                          **common)  # type: ignore[arg-type]  # fmt: skip
    kw = {"collate_fn": detection_collate, "num_workers": args.workers,
          "persistent_workers": args.workers > 0}  # fmt: skip
    return (
        DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True, **kw),  # type: ignore[arg-type]
        DataLoader(val, batch_size=args.batch_size, **kw),  # type: ignore[arg-type]
        test,
    )


def train_network(
    args: argparse.Namespace,
    train: DataLoader[dict],
    val: DataLoader[dict],  # type: ignore[type-arg]
) -> tuple[torch.nn.Module, str]:
    """Train the Mask R-CNN; the best epoch's network (by val_map) and a note on the run."""
    module = DetectionModule(optim=DETECTION_OPTIM.replace(lr=args.lr))
    best = ModelCheckpoint(dirpath=args.out / "checkpoints", monitor="val_map", mode="max")
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=1,
        precision=args.precision, callbacks=[best], logger=False,
        enable_progress_bar=not args.quiet, enable_model_summary=False,
        default_root_dir=args.out, num_sanity_val_steps=0,
        max_time={"minutes": args.max_minutes} if args.max_minutes else None,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, train, val)
    seconds = time.perf_counter() - start
    if best.best_model_path:
        module = DetectionModule.load_from_checkpoint(best.best_model_path, map_location="cpu")
    note = (
        f"Mask R-CNN trained {seconds:.0f} s on {args.train_fields} fields, "
        f"{trainer.current_epoch} of {args.epochs} epochs, "
        f"best val_map {float(best.best_model_score or 0):.3f}"
    )
    return module.model, note


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Train, compare, print and write the table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if (args.out / "detectors.json").exists() and not args.overwrite:
        raise SystemExit(f"{args.out / 'detectors.json'} exists; pass --overwrite or another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, workers=True, verbose=False)
    train, val, test = loaders(args)
    device = "cuda" if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu"
    if args.weights is None:
        model, train_note = train_network(args, train, val)
        torch.save(model.state_dict(), args.out / "mask_rcnn.pt")
    else:
        model, train_note = create_mask_rcnn(weights=args.weights), f"weights {args.weights}"
    network = MaskRCNNCellDetector(model.to(device), score_threshold=0.5)
    zoom = args.test_pixels_per_um / 4.0
    classical = ClassicalCellDetector(min_area=round(300 * zoom**2), min_distance=round(20 * zoom))
    detectors = {
        "classical": classical,
        "mask_rcnn": network,
        "hybrid": HybridCellDetector(classical, network),
        "hybrid_classical_edges": HybridCellDetector(classical, network, refine_masks=True),
    }
    scores = compare_detectors(detectors, test, progress=not args.quiet)
    table = detector_table(scores)
    first = scores[0]
    print(
        f"\nNucleus-mask AP on {first.n_images} held-out SyntheticSmear fields at "
        f"{args.test_pixels_per_um:g} pixels/um ({first.n_cells} white cells, "
        f"{first.n_overlapping} touching or overlapping); {train_note}:\n"
    )
    print(table)
    record: dict[str, object] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "training": train_note,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "scores": [asdict(s) for s in scores],
    }
    (args.out / "detectors.md").write_text(table + "\n")
    (args.out / "detectors.json").write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
