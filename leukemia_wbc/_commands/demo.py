"""``leukemia-wbc demo``: the main job on SyntheticWBC (see :mod:`leukemia_wbc.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._parser import command_parser, flag, parse

__all__ = ["demo_parser", "run_demo_command"]


def demo_parser() -> Any:
    """The options of ``leukemia-wbc demo`` (a ``jsonargparse.ArgumentParser``)."""
    parser = command_parser(
        "leukemia-wbc demo",
        "Train the nucleus U-Net, cross-validate the dual-branch classifier against the ResNet, "
        "VGG and SVM baselines on SyntheticWBC, and write the HTML report. The default is "
        "CPU-sized; --full runs the paper's settings (use a GPU).",
    )
    parser.add_argument("--out", type=str, default="runs/demo", help="output folder")
    flag(parser, "full", "paper settings: 224 px, 10 folds")
    parser.add_argument("--n", type=int | None, default=None, help="synthetic cells")
    parser.add_argument("--epochs", type=int | None, default=None, help="epochs per fold")
    parser.add_argument("--folds", type=int | None, default=None, help="folds")
    parser.add_argument("--size", type=int | None, default=None, help="image side in pixels")
    parser.add_argument("--unet_epochs", type=int | None, default=None,
                        help="epochs of the nucleus U-Net")  # fmt: skip
    flag(parser, "no_progress", "hide progress bars")
    return parser


def run_demo_command(argv: list[str]) -> int:
    """Segmentation, the paper's comparison beside colour alone and the report on SyntheticWBC.

    Args:
        argv: Arguments after ``demo``.

    Returns:
        The exit status.
    """
    from ..demo import DemoSettings, run_demo

    args = parse(demo_parser(), argv)
    settings = DemoSettings.paper() if args.full else DemoSettings.cpu()
    for name in ("n", "epochs", "folds", "size", "unet_epochs"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    run_demo(Path(args.out), settings, progress=not args.no_progress)
    return 0
