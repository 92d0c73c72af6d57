"""The main job on the embedded data: segmentation, the paper's comparison, the report.

:func:`run_demo` renders :class:`~leukemia_wbc.data.SyntheticWBC` cells, trains the nucleus
U-Net and reports its held-out Dice, cross-validates the dual-branch classifier against the
ResNet and VGG baselines and the SVM on handcrafted features (identical patient-grouped folds),
explains held-out cells and writes the HTML report. The default is sized for a CPU (small
backbones of the same families, AdamW with a one-cycle schedule, 64 px, 3 folds: the packaged
configs of :data:`DEMO_CONFIGS`); ``full=True`` uses the paper's (:data:`PAPER_CONFIGS`:
ResNet-50 + MobileNetV2, VGG-16, Adam with ReduceLROnPlateau, 224 px, 10 folds), for a GPU.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml

from ._commands.cv import CVConfig
from ._io import atomic_write_text
from .configs import resolve_config
from .data import SyntheticWBC, WBCDataModule
from .evaluation import attribution_gallery, compare, cv_robustness, held_out_focus
from .experiments import (
    CrossValidator,
    CVResult,
    TaskSpec,
    as_fold_model,
    resolve_precision,
    save_overlays,
)
from .report import ReportFiles, write_report
from .tasks import OptimConfig, SegmentationModule

__all__ = [
    "DEMO_CONFIGS",
    "PAPER_CONFIGS",
    "STAIN_SHIFT",
    "DemoSettings",
    "comparison_models",
    "demo_configs",
    "paper_configs",
    "run_demo",
    "train_unet",
]

_log = logging.getLogger(__name__)

#: The stain shifts every model of the demo is scored under (the perturbation suite's
#: strongest): its report and comparison put each accuracy beside them.
STAIN_SHIFT: tuple[str, ...] = ("stain_rotation", "stain_concentration")


#: The packaged configs of the CPU demo, by the demo's folder names: ``demo`` (the dual branch,
#: the data, folds and epochs) and a model laid over it for each baseline.
DEMO_CONFIGS: dict[str, tuple[str, ...]] = {
    "dual_branch": ("demo", "recommended_cpu"),
    "resnet": ("demo", "demo_resnet"),
    "vgg": ("demo", "demo_vgg"),
    "svm": ("demo", "demo_svm"),
    "colour": ("demo", "colour_baseline"),
}

#: The packaged configs of the paper's comparison (``--full``), by the demo's folder names.
PAPER_CONFIGS: dict[str, str] = {
    "dual_branch": "paper_dual_branch",
    "resnet": "resnet50_baseline",
    "vgg": "vgg16_baseline",
    "svm": "svm_baseline",
}


@dataclass
class DemoSettings:
    """Sizes of a demo run: :meth:`cpu` and :meth:`paper` read them from the packaged configs.

    Attributes:
        n: Synthetic cells.
        size: Image side in pixels.
        patients: Synthetic patients (the groups of the folds).
        folds: Cross-validation folds.
        epochs: Epoch limit per fold.
        batch_size: Batch size.
        unet_epochs: Epochs of the U-Net.
        full: The paper's setup: the packaged configs of :data:`PAPER_CONFIGS` (backbones,
            preprocessing, loss, optimiser, early stopping) on the demo's cells; otherwise
            those of :data:`DEMO_CONFIGS`.
    """

    n: int
    size: int
    patients: int
    folds: int
    epochs: int
    batch_size: int
    unet_epochs: int = 4
    full: bool = False

    @classmethod
    def cpu(cls) -> DemoSettings:
        """The CPU demo, read from the packaged ``demo`` config.

        Cells, patients, image and batch sizes, folds and the epoch limit come from the file
        (960 cells of 12 patients at 64 px, 3 folds, up to 12 epochs); the U-Net's 4 epochs
        are the demo's own.
        """
        config = _read_config("demo")
        data, cv = config["data"], config["cv"]
        cells = data["dataset"]["init_args"]
        return cls(
            n=int(cells["n"]),
            size=int(data["size"]),
            patients=int(cells["n_patients"]),
            folds=int(cv["n_splits"]),
            epochs=int(cv["max_epochs"]),
            batch_size=int(data["batch_size"]),
        )

    @classmethod
    def paper(cls) -> DemoSettings:
        """The paper's protocol on SyntheticWBC, read from the packaged ``paper_dual_branch``.

        Image size, batch size, folds and the epoch limit come from the config file (224 px,
        10 folds, up to 50 epochs), as do the models and their settings in :func:`run_demo`;
        the cell and patient counts are the demo's own (4,000 cells of 40 patients).
        """
        config = _read_config("paper_dual_branch")
        data, cv = config["data"], config["cv"]
        return cls(
            n=4000,
            size=int(data["size"]),
            patients=40,
            folds=int(cv["n_splits"]),
            epochs=int(cv["max_epochs"]),
            batch_size=int(data["batch_size"]),
            unet_epochs=30,
            full=True,
        )


def _read_config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(Path(resolve_config(name)).read_text("utf-8"))
    return config


def demo_configs(
    settings: DemoSettings,
    out: str | Path,
    segmenter: str | None = None,
    *,
    lr: float | None = None,
) -> dict[str, CVConfig]:
    """The demo's models as packaged configs, on the demo's SyntheticWBC.

    The paper's four (dual branch, ResNet, VGG, SVM) and the colour-shortcut baseline, whose
    row shows what whole-image colour alone scores on the same folds.

    ``settings.full`` picks :data:`PAPER_CONFIGS`, otherwise :data:`DEMO_CONFIGS`. Each is read
    as ``leukemia-wbc cv --config NAME`` reads it (model, data pipeline, ``cv`` options); only
    the dataset's size, the image and batch sizes, the folds, the epoch limit and the output
    folder (``out/<name>``) are the demo's.

    Args:
        settings: Demo sizes.
        out: The demo's output folder.
        segmenter: A segmenter spec (e.g. the demo U-Net's checkpoint) for the dual branch and
            the SVM, which then take every nucleus mask from it (``mask_source="segmenter"``).
        lr: Replaces the networks' (peak) learning rate.

    Returns:
        Folder name to configured cross-validation.
    """
    from ._commands.cv import load_cv_config

    s = settings
    common = [
        "--data.dataset.init_args.n", str(s.n),
        "--data.dataset.init_args.n_patients", str(s.patients),
        "--data.dataset.init_args.difficulty", "0.1",
        "--data.size", str(s.size), "--data.batch_size", str(s.batch_size),
        "--cv.n_splits", str(s.folds), "--cv.max_epochs", str(s.epochs),
    ]  # fmt: skip
    chain = [] if segmenter is None else [
        "--model.init_args.segmenter", segmenter, "--model.init_args.mask_source", "segmenter",
    ]  # fmt: skip
    rate = [] if lr is None else ["--model.init_args.optim.lr", str(lr)]
    names = (
        {**{k: (v,) for k, v in PAPER_CONFIGS.items()},
         "colour": (PAPER_CONFIGS["dual_branch"], "colour_baseline")}
        if s.full else DEMO_CONFIGS
    )  # fmt: skip
    setups = {}
    for key, configs in names.items():
        argv = [arg for name in configs for arg in ("--config", name)] + common
        argv += chain if key in ("dual_branch", "svm") else []
        argv += rate if key not in ("svm", "colour") else []
        setups[key] = load_cv_config([*argv, "--cv.output_dir", str(Path(out) / key)])
    return setups


def paper_configs(
    settings: DemoSettings, out: str | Path, segmenter: str | None = None
) -> dict[str, CVConfig]:
    """The paper's four packaged configs (:data:`PAPER_CONFIGS`) on the demo's SyntheticWBC.

    :func:`demo_configs` with ``settings.full`` set.

    Args:
        settings: Demo sizes.
        out: The demo's output folder.
        segmenter: A segmenter spec for the dual branch and the SVM.

    Returns:
        Folder name to configured cross-validation.
    """
    return demo_configs(replace(settings, full=True), out, segmenter)


def comparison_models(
    full: bool = False, *, lr: float | None = None, segmenter: str | None = None
) -> dict[str, TaskSpec]:
    """The models of the paper's comparison and the colour baseline, on the SyntheticWBC classes.

    ``full=True`` is the paper's setup (:data:`PAPER_CONFIGS`): ResNet-50 (cell) + MobileNetV2
    (nucleus), ResNet-50 and VGG-16, Adam with ReduceLROnPlateau, and the SVM. The CPU default
    (:data:`DEMO_CONFIGS`) keeps each model's family at a size that trains from random
    initialisation in minutes: ResNet-10t (cell) + MobileNetV3-Small-0.5 (nucleus), ResNet-10t,
    and VGG-11 with batch norm at a quarter width
    (:func:`~leukemia_wbc.models.slim_vgg.vgg11_bn_quarter`); AdamW with a one-cycle schedule.

    Args:
        full: The paper's configs; otherwise the CPU demo's.
        lr: Replaces the networks' (peak) learning rate.
        segmenter: A segmenter spec for the dual branch and the SVM, which then take every
            nucleus mask from it (the paper's chain: a trained U-Net's masks in training and at
            test); ``None``: the data's masks.

    Returns:
        Folder name to task (templates for the cross-validator).
    """
    settings = DemoSettings.paper() if full else DemoSettings.cpu()
    configs = demo_configs(settings, "runs/demo", segmenter, lr=lr)
    return {key: config.model for key, config in configs.items()}


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
    unet = SegmentationModule("unet", encoder, optim=OptimConfig(lr=3e-3))
    dm = WBCDataModule(
        dataset,
        size=settings.size,
        batch_size=settings.batch_size,
        split="holdout",
        test_fraction=0.2,
    )
    trainer = pl.Trainer(
        max_epochs=settings.unet_epochs,
        precision=resolve_precision("auto", trainer_kwargs.get("accelerator", "auto")),  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(unet, datamodule=dm)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint, weights_only=True)  # for inference
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
    s = settings or DemoSettings.cpu()
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
    segmenter = str(folder / "unet.ckpt")
    fold_trainer = {"enable_progress_bar": progress, "enable_model_summary": False,
                    "log_every_n_steps": 5}  # fmt: skip
    # the packaged configs, as `leukemia-wbc cv --config NAME` runs them
    ours = {"accelerator": trainer.get("accelerator", "auto"), "trainer_kwargs": fold_trainer}
    setups = demo_configs(s, folder, segmenter).values()
    for setup in setups:
        as_fold_model(setup.model).show_progress(progress)
    runs = [CrossValidator(c.model, c.data, **(c.options | ours)) for c in setups]
    dm = runs[0].datamodule
    results: list[CVResult] = []
    for cv in runs:
        results.append(cv.run())
        print(f"{cv.name}: accuracy {results[-1].summary()['accuracy'].format()}", flush=True)
    # every accuracy beside colour alone and under a stain shift (the report warns on both)
    shifted = {
        r.name: cv_robustness(r, dm.dataset, perturbations=STAIN_SHIFT, strengths=(1.0,),
                              progress=False)
        for r in results
    }  # fmt: skip
    worst = {name: scores.worst("stain") for name, scores in shifted.items()}
    table = compare(results, folder / "comparison.md", stain_shift=worst)
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
        f"{s.unet_epochs} epochs): Dice {dice:.3f} on held-out patients. The dual branch and "
        "the SVM take every nucleus mask from this U-Net, in training and at test (the paper's "
        "chain; the true masks are not used). The U-Net was trained on 80 % of the patients, "
        "so it has seen the masks (never the classes) of some cells that the folds hold out."
        "\n\n"
        "Integrated Gradients on fold 0's held-out cells (share of attribution inside the "
        "nucleus against the nucleus's share of the image):\n\n"
        + "\n".join(f.to_markdown() for f in focus)
    )
    files = write_report(results, folder / "report", gallery=gallery, notes=notes,
                         robustness=shifted)  # fmt: skip
    print(f"report: {files.html}")
    return files
