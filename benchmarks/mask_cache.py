"""Segment once: the dual branch's epoch time with and without the segmenter mask cache.

A :class:`~leukemia_wbc.tasks.DualBranchClassifier` trained on cells without nucleus masks
(here the 351 real BCCD crops of ``../shared/data/BCCD_cropped``) gets its nucleus masks from
its frozen segmenter. Four ways, in one process, on the same data and network:

* ``every batch`` (the reference): the segmenter runs on every batch of every epoch
  (``task.mask_cache = None``, as the library did before it kept masks);
* ``in memory``: masks kept by path for the run (a task's default without a cache folder);
* ``SegmentOnce, cold``: the callback segments the training and validation cells in a first
  pass and writes them to an empty cache folder;
* ``SegmentOnce, warm``: a second run (a new task, as the next fold or run) on that folder.

Each row trains ``--epochs`` epochs (CPU, 2 threads) and reports the first pass, the first
epoch and the median of the later epochs (training and validation), in seconds, with the
ratio of the later epochs against the reference. Run:
``python benchmarks/mask_cache.py [--size 128] [--epochs 3] [--segmenter kmeans]``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, append_record, table

from leukemia_wbc.data import WBCDataModule
from leukemia_wbc.data.folder import BCCD_GROUP_PATTERN, ImageFolderWBC
from leukemia_wbc.tasks import DualBranchClassifier, SegmentOnce


class _EpochClock(pl.Callback):
    """Wall time of the first pass (fit start to first epoch) and of each epoch."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.marks = [time.perf_counter()]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks.append(time.perf_counter())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks.append(time.perf_counter())


def run(mode: str, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    """Train once in ``mode``; seconds of the first pass and of each epoch."""
    pl.seed_everything(0, verbose=False)
    data = ImageFolderWBC(
        SHARED_DATA / "BCCD_cropped", group_pattern=BCCD_GROUP_PATTERN, size=args.size
    )
    dm = WBCDataModule(data, size=args.size, batch_size=32)
    task = DualBranchClassifier(
        cell_backbone="resnet10t",
        nucleus_backbone="mobilenetv3_small_050",
        nucleus_size=48,
        segmenter=args.segmenter,
    )
    if mode == "every batch":
        task.mask_cache = None
    clock = _EpochClock()
    callbacks: list[pl.Callback] = [clock]
    if mode.startswith("SegmentOnce"):
        callbacks.insert(0, SegmentOnce(cache_dir, progress=False))
    trainer = pl.Trainer(max_epochs=args.epochs, callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    marks = clock.marks
    epochs = [b - a for a, b in itertools.pairwise(marks[1:])]
    counts = dict(task.mask_cache.counts) if task.mask_cache is not None else {}
    later = sorted(epochs[1:])[len(epochs[1:]) // 2] if len(epochs) > 1 else float("nan")
    return {"first_pass": marks[1] - marks[0], "epoch_1": epochs[0], "later": later,
            "epochs": epochs, "masks": counts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--segmenter", default="multiotsu_blue_green")
    args = parser.parse_args()
    if not (SHARED_DATA / "BCCD_cropped").is_dir():
        sys.exit(f"{SHARED_DATA / 'BCCD_cropped'} is absent")
    torch.set_num_threads(2)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    cache_dir = Path(tempfile.mkdtemp(prefix="mask_cache_"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in ("every batch", "in memory", "SegmentOnce, cold", "SegmentOnce, warm"):
            results[mode] = run(mode, args, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    ref = results["every batch"]["later"]
    rows = []
    for mode, r in results.items():
        masks = r["masks"]
        rows.append((mode, f"{r['first_pass']:.1f}", f"{r['epoch_1']:.1f}", f"{r['later']:.1f}",
                     f"{ref / r['later']:.2f}", str(masks.get("segmented", "-")),
                     str(masks.get("disk", "-"))))  # fmt: skip
    print(f"DualBranchClassifier (resnet10t + mobilenetv3_small_050) on the 351 BCCD crops at "
          f"{args.size} px, segmenter {args.segmenter}, {args.epochs} epochs, CPU 2 threads; "
          "seconds")  # fmt: skip
    header = ("masks", "first pass", "epoch 1", "later epochs", "x reference", "segmented",
              "read from disk")  # fmt: skip
    print(table(rows, header))
    figures = {"size": args.size, "epochs": args.epochs, "segmenter": args.segmenter,
               "results": results}  # fmt: skip
    path = append_record("mask_cache", figures)
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
