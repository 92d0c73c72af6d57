"""``leukemia-wbc pretrain``: self-supervised pretraining of a backbone on unlabelled cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._parser import command_parser, flag, parse

__all__ = ["pretrain_parser", "run_pretrain"]


def pretrain_parser() -> Any:
    """The parser of ``leukemia-wbc pretrain`` (``--model``, ``--data`` and the run's options).

    Returns:
        A ``jsonargparse.ArgumentParser``.
    """
    from ..data.datamodule import WBCDataModule
    from ..tasks.pretrain import PretrainModule

    parser = command_parser(
        "leukemia-wbc pretrain",
        "Pretrain a timm backbone without labels (SimCLR or BYOL) on the cells of a dataset; "
        "writes OUTPUT_DIR/backbone.pt, a weights= file for the classifiers and the U-Net "
        "encoder of the same architecture.",
    )
    parser.add_class_arguments(PretrainModule, "model", skip={"optim"}, instantiate=False)
    parser.add_class_arguments(WBCDataModule, "data")
    parser.add_argument("--output_dir", type=str, required=True,
                        help="the run's folder: backbone.pt, pretrain.json, logs/")  # fmt: skip
    parser.add_argument("--max_epochs", type=int, default=100, help="epochs to train")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak learning rate (AdamW, cosine schedule)")  # fmt: skip
    parser.add_argument("--exclude_test", type=bool, default=True,
                        help="leave out the data's test part (--data.fold of --data.split) so "
                             "that a model scored on it never saw its cells; unlabelled data "
                             "has no test part")  # fmt: skip
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="share of groups validated on when the data has no split",
    )
    parser.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator")
    parser.add_argument("--devices", type=int | str, default=1, help="Lightning devices")
    parser.add_argument(
        "--precision",
        type=str,
        default="auto",
        help="Lightning precision; auto: bf16 where the CPU or GPU has it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the views and the weights")
    flag(parser, "overwrite", "replace a finished run in OUTPUT_DIR")
    flag(parser, "no_progress", "hide the progress bar (one log line per epoch instead)")
    return parser


def run_pretrain(argv: list[str]) -> int:
    """Run ``leukemia-wbc pretrain``.

    Args:
        argv: The arguments after ``pretrain``.

    Returns:
        The exit status.
    """
    import logging

    from .._io import atomic_write_bytes
    from ..configs import resolve_configs
    from ..experiments.pretraining import pretrain
    from ..report.figures import pretrain_figure
    from ..tasks.optim import OptimConfig
    from ..tasks.pretrain import PretrainModule

    parser = pretrain_parser()
    cfg = parse(parser, resolve_configs(argv))
    init = parser.instantiate_classes(cfg)
    model_args = dict(vars(cfg.model))
    optim = OptimConfig(optimizer="adamw", scheduler="cosine", lr=cfg.lr, weight_decay=1e-4)
    module = PretrainModule(**model_args, optim=optim)
    if cfg.no_progress:
        logging.getLogger("leukemia_wbc").setLevel(logging.INFO)
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(message)s")
    result = pretrain(module, init.data, Path(cfg.output_dir), max_epochs=cfg.max_epochs,
                      exclude_test=cfg.exclude_test, val_fraction=cfg.val_fraction,
                      overwrite=cfg.overwrite, accelerator=cfg.accelerator, devices=cfg.devices,
                      precision=cfg.precision, progress=not cfg.no_progress,
                      seed=cfg.seed)  # fmt: skip
    first = result.history[0].get("train_loss") if result.history else None
    final = result.history[-1].get("train_loss") if result.history else None
    left_out = f", {result.excluded} test cells left out" if result.excluded else ""
    losses = f"; loss {first:.3f} -> {final:.3f}" if first is not None and final is not None else ""
    print(f"pretrained {result.backbone_name} ({result.method}) on {result.train_samples} cells"
          f"{left_out}, {result.epochs} epochs in {result.seconds:.0f} s{losses}")  # fmt: skip
    figure = result.backbone.parent / "pretrain.png"
    atomic_write_bytes(figure, pretrain_figure(result, module.projection_dim))
    print(f"weights: {result.backbone}")
    print(f"curves: {figure}")
    print(
        f"use them with: --model.init_args.weights {result.backbone} (CellClassifier), "
        f"--model.init_args.cell_weights / nucleus_weights (DualBranchClassifier), "
        f"--model.init_args.encoder_weights with encoder tu-{result.backbone_name} (U-Net)"
    )
    return 0
