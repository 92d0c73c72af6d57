"""``leukemia-wbc classify`` and ``leukemia-wbc explain``: a checkpoint on image files."""

from __future__ import annotations

import argparse
import csv
import inspect
import io
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .._io import atomic_write_text, write_png
from ..inference import TrainedModel
from ._inference import image_paths

__all__ = ["run_classify", "run_explain"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a CellClassifier / DualBranchClassifier checkpoint")
    parser.add_argument("inputs", nargs="+", help="images, folders, or .txt/.csv path lists")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument(
        "--segmenter",
        help="replace the model's saved nucleus segmenter: a classical method (kmeans, "
        "watershed, ...) or a SegmentationModule checkpoint (default: the one it was trained "
        "with)",
    )
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "integrated_gradients"])


def _run(args: argparse.Namespace, *, table: Path | None, overlays: Path | None) -> int:
    from ..explain import overlay

    model = TrainedModel.from_checkpoint(
        args.checkpoint, device=args.device, segmenter=args.segmenter or None
    )
    paths = image_paths(args.inputs)
    classes = model.classes
    rows = [["path", "predicted", *(f"prob_{c}" for c in classes)]]
    with tqdm(total=len(paths), desc="classify", unit="img") as bar:
        for names, batch in model.batches(
            paths, batch_size=args.batch_size, num_workers=args.workers
        ):
            probs = model.predict_batch(batch).numpy()
            for name, p in zip(names, probs, strict=True):
                rows.append([name, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)])
            if overlays is not None:
                maps = model.explain(batch, method=args.method).maps
                images = batch["image"].float() / 255.0
                for i, name in enumerate(names):
                    for branch, m in maps.items():
                        picture = overlay(images[i].cpu(), m[i, 0])
                        write_png(overlays / f"{Path(name).stem}_{branch}.png", picture)
            bar.update(len(names))
    if table is not None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        atomic_write_text(table, buf.getvalue())
        print(f"{len(rows) - 1} images classified: {table}")
    if overlays is not None:
        print(f"overlays ({args.method}): {overlays}")
    return 0


def _summary(command: Callable[..., int]) -> str:
    """First paragraph of a command's docstring (its ``--help`` description)."""
    return inspect.cleandoc(command.__doc__ or "").split("\n\n")[0]


def run_classify(argv: list[str]) -> int:
    """Class probabilities of images into a CSV (and, with ``--overlays``, attribution PNGs).

    Args:
        argv: Arguments after ``classify``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="leukemia-wbc classify", description=_summary(run_classify)
    )
    _common(parser)
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV file")
    parser.add_argument("--overlays", type=Path, help="also write attribution overlays here")
    args = parser.parse_args(argv)
    return _run(args, table=args.out, overlays=args.overlays)


def run_explain(argv: list[str]) -> int:
    """Attribution overlays (one PNG per image and branch) of a checkpoint's predictions.

    Args:
        argv: Arguments after ``explain``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="leukemia-wbc explain", description=_summary(run_explain))
    _common(parser)
    parser.add_argument("--out", type=Path, default=Path("overlays"), help="output folder")
    args = parser.parse_args(argv)
    return _run(args, table=None, overlays=args.out)
