"""``leukemia-wbc demo``: the main job on SyntheticWBC (see :mod:`leukemia_wbc.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["run_demo_command"]


def run_demo_command(argv: list[str]) -> int:
    """Segmentation, the four-model comparison and the report on SyntheticWBC.

    Args:
        argv: Arguments after ``demo``.

    Returns:
        The exit status.
    """
    from ..demo import DemoSettings, run_demo

    parser = argparse.ArgumentParser(
        prog="leukemia-wbc demo",
        description="Train the nucleus U-Net, cross-validate the dual-branch classifier against "
        "the ResNet, VGG and SVM baselines on SyntheticWBC, and write the HTML report. The "
        "default is CPU-sized; --full runs the paper's settings (use a GPU).",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--full", action="store_true", help="paper settings: 224 px, 10 folds")
    parser.add_argument("--n", type=int, help="synthetic cells")
    parser.add_argument("--epochs", type=int, help="epochs per fold")
    parser.add_argument("--folds", type=int, help="folds")
    parser.add_argument("--size", type=int, help="image side in pixels")
    parser.add_argument("--unet-epochs", type=int, help="epochs of the nucleus U-Net")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    settings = DemoSettings.paper() if args.full else DemoSettings.cpu()
    for name in ("n", "epochs", "folds", "size", "unet_epochs"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    run_demo(args.out, settings, progress=not args.no_progress)
    return 0
