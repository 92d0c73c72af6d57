"""The main job on the embedded data: segmentation, the paper's comparison, the report.

:func:`run_demo` renders :class:`~leukemia_wbc.data.SyntheticWBC` cells, trains the nucleus
U-Net and reports its held-out Dice, cross-validates the dual-branch classifier against the
ResNet and VGG baselines and the SVM on handcrafted features (identical patient-grouped folds),
explains held-out cells and writes the HTML report. The default is sized for a CPU (small
backbones of the same families, AdamW with a one-cycle schedule, 64 px, 3 folds; see
:func:`comparison_models`); ``full=True`` uses the paper's settings (ResNet-50 + MobileNetV2,
VGG-16, Adam with ReduceLROnPlateau, 224 px, 10 folds), for a GPU.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from .data import SYNTHETIC_CLASSES, SyntheticWBC, WBCDataModule
from .evaluation import (
    CrossValidator,
    CVResult,
    ReportFiles,
    attribution_gallery,
    compare,
    held_out_focus,
    save_overlays,
    write_report,
)
from .evaluation._io import atomic_write_text
from .evaluation.cross_validation import TaskSpec
from .models.handcrafted import HandcraftedSVM
from .tasks import CellClassifier, DualBranchClassifier, SegmentationModule

__all__ = ["DemoSettings", "comparison_models", "run_demo", "train_unet"]

_log = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """Sizes of a demo run.

    Attributes:
        n: Synthetic cells.
        size: Image side in pixels.
        patients: Synthetic patients (the groups of the folds).
        folds: Cross-validation folds.
        epochs: Epoch limit per fold.
        unet_epochs: Epochs of the U-Net.
        full: Paper-sized backbones (ResNet-50 + MobileNetV2, VGG-16).
        batch_size: Batch size.
    """

    n: int = 960
    size: int = 64
    patients: int = 12
    folds: int = 3
    epochs: int = 12
    unet_epochs: int = 4
    full: bool = False
    batch_size: int = 32

    @classmethod
    def paper(cls) -> DemoSettings:
        """The paper's protocol on SyntheticWBC: 224 px, 10 folds, up to 50 epochs."""
        return cls(n=4000, size=224, patients=40, folds=10, epochs=50, unet_epochs=30, full=True)


def comparison_models(full: bool = False, *, lr: float | None = None) -> dict[str, TaskSpec]:
    """The four models of the paper's comparison, on the SyntheticWBC classes.

    ``full=True`` is the paper's setup: ResNet-50 (cell) + MobileNetV2 (nucleus), ResNet-50 and
    VGG-16, Adam at 1e-3 with ReduceLROnPlateau. The CPU default keeps each model's family at
    a size that trains from random initialisation in minutes: ResNet-10t (cell) +
    MobileNetV3-Small-0.5 (nucleus), ResNet-10t, and VGG-11 with batch norm at a quarter width
    (:func:`~leukemia_wbc.models.slim_vgg.vgg11_bn_quarter`); AdamW with a one-cycle schedule
    peaking at 5e-3 (1e-3 for the VGG, which collapsed to one class at 5e-3: held-out accuracy
    0.21 against 0.39 at 1e-3 in a 12-epoch run on the demo's cells).

    Args:
        full: The paper's backbones and optimiser; otherwise the CPU-sized ones.
        lr: Learning rate of every network (default: 1e-3 with ``full``; else 5e-3, and 1e-3
            for the VGG).

    Returns:
        Folder name to task (templates for the cross-validator).
    """
    common: dict[str, Any] = {"num_classes": 4, "classes": SYNTHETIC_CLASSES, "dropout": 0.2}
    if full:
        cell, nucleus, resnet, vgg, width, crop = (
            "resnet50", "mobilenetv2_100", "resnet50", "vgg16", 256, 128,
        )  # fmt: skip
        common |= {"lr": lr or 1e-3, "lr_patience": 3}
    else:
        cell, nucleus, resnet, vgg, width, crop = (
            "resnet10t", "mobilenetv3_small_050", "resnet10t", "vgg11_bn_quarter", 64, 48,
        )  # fmt: skip
        common |= {"lr": lr or 5e-3, "weight_decay": 0.05, "optimizer": "adamw",
                   "scheduler": "onecycle"}  # fmt: skip
    return {
        "dual_branch": DualBranchClassifier(
            cell,
            nucleus,
            nucleus_size=crop,
            fusion_features=width,
            head_hidden=(width,),
            **common,
        ),
        "resnet": CellClassifier(resnet, head_hidden=(width,), **common),
        "vgg": CellClassifier(vgg, head_hidden=(width,), **(common | {"lr": lr or 1e-3})),
        "svm": HandcraftedSVM(progress=False),
    }


def train_unet(
    dataset: SyntheticWBC,
    settings: DemoSettings,
    trainer_kwargs: dict[str, Any],
    checkpoint: Path | None = None,
) -> tuple[SegmentationModule, float]:
    """Train the nucleus U-Net on a patient-grouped hold-out split; return it and its test Dice.

    Args:
        dataset: Cells with nucleus masks.
        settings: Demo sizes (``unet_epochs``, ``batch_size``, ``full``).
        trainer_kwargs: Extra ``Trainer`` arguments.
        checkpoint: Where to save the trained U-Net (usable as ``classify --segmenter``).

    Returns:
        The trained module and its mean Dice on the held-out patients.
    """
    pl.seed_everything(0, verbose=False)
    encoder = "resnet34" if settings.full else "tu-mobilenetv2_050"
    unet = SegmentationModule("unet", encoder, lr=3e-3)
    dm = WBCDataModule(
        dataset,
        size=settings.size,
        batch_size=settings.batch_size,
        split="holdout",
        test_fraction=0.2,
    )
    trainer = pl.Trainer(
        max_epochs=settings.unet_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(unet, datamodule=dm)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    scores = trainer.test(unet, datamodule=dm, verbose=False)[0]
    return unet, float(scores["test_dice"])


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
) -> ReportFiles:
    """Run the demo into ``out`` (resumable: finished folds are kept) and write the report.

    Args:
        out: Output folder: ``unet.json``, one folder per model, ``comparison.md``,
            ``gallery/`` and ``report/``.
        settings: Sizes (default :class:`DemoSettings`).
        progress: Show progress bars.

    Returns:
        The report's files.
    """
    s = settings or DemoSettings()
    folder = Path(out)
    start = time.perf_counter()
    dataset = SyntheticWBC(s.n, size=s.size, seed=0, n_patients=s.patients, difficulty=0.1)
    trainer: dict[str, Any] = {"enable_progress_bar": progress, "log_every_n_steps": 5}
    if not torch.cuda.is_available():
        trainer["accelerator"] = "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    _, dice = train_unet(dataset, s, trainer, folder / "unet.ckpt")
    atomic_write_text(folder / "unet.json", json.dumps({"test_dice": dice}, indent=2))
    print(f"nucleus U-Net: held-out Dice {dice:.3f}", flush=True)
    dm = WBCDataModule(dataset, size=s.size, batch_size=s.batch_size)
    results: list[CVResult] = []
    for key, task in comparison_models(s.full).items():
        cv = CrossValidator(
            task,
            dm,
            folder / key,
            n_splits=s.folds,
            seed=0,
            max_epochs=s.epochs,
            # a one-cycle run is scored at its best epoch, not stopped while the rate is high
            early_stopping_patience=4 if s.full else None,
            accelerator=trainer.get("accelerator", "auto"),
            trainer_kwargs={
                "enable_progress_bar": progress,
                "enable_model_summary": False,
                "log_every_n_steps": 5,
            },
        )
        results.append(cv.run())
        print(f"{cv.name}: accuracy {results[-1].summary()['accuracy'].format()}", flush=True)
    table = compare(results, folder / "comparison.md")
    print("\n" + table)
    gallery = attribution_gallery(results[0], dm, per_class=2)
    save_overlays(gallery, folder / "gallery")
    focus = held_out_focus(results[0], dm, fold=0, method="integrated_gradients")
    minutes = (time.perf_counter() - start) / 60
    notes = (
        f"SyntheticWBC: {s.n} cells at {s.size} px from {s.patients} synthetic patients "
        f"(difficulty 0.1), {s.folds} patient-grouped stratified folds, up to {s.epochs} epochs "
        f"per fold from random initialisation; this run took {minutes:.1f} min.\n\n"
        f"Nucleus U-Net ({'ResNet-34' if s.full else 'MobileNetV2-0.5'} encoder, "
        f"{s.unet_epochs} epochs): Dice {dice:.3f} on held-out patients.\n\n"
        "Integrated Gradients on fold 0's held-out cells (share of attribution inside the "
        "nucleus against the nucleus's share of the image):\n\n"
        + "\n".join(f.to_markdown() for f in focus)
    )
    files = write_report(results, folder / "report", gallery=gallery, notes=notes)
    print(f"report: {files.html}")
    return files
