"""``leukemia-wbc classify`` and ``leukemia-wbc explain``: a checkpoint on image files.

Nothing is lost: every output is planned and checked before the model loads (an existing file
needs ``--overwrite``, an input is never an output, two inputs never write one file), the table
is written at the end in one piece, and per-image files are named by their place under the
input (see ``_commands/_inference.py``).
"""

from __future__ import annotations

import csv
import inspect
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from .._io import atomic_write_bytes, atomic_write_text
from ..inference import TrainedModel
from ._inference import Inputs, collect_inputs
from ._outputs import check_outputs, per_input
from ._parser import command_parser, flag, parse

if TYPE_CHECKING:
    from ..explain import AttributionMethod

__all__ = ["classify_parser", "explain_parser", "run_classify", "run_explain"]


def _common(parser: Any) -> None:
    parser.add_argument("checkpoint", type=str,
                        help="a CellClassifier / DualBranchClassifier checkpoint")  # fmt: skip
    parser.add_argument(
        "inputs", nargs="+", type=str,
        help="images, folders (searched recursively; mask files beside the images are left "
        "out) or .txt/.csv path lists (relative paths in a list: from the list's folder)",
    )  # fmt: skip
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch_size", type=int, default=32, help="images per batch")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument(
        "--segmenter", type=str | None, default=None,
        help="replace the model's saved nucleus segmenter: a classical method (kmeans, "
        "watershed, ...) or a SegmentationModule checkpoint (default: the one it was trained "
        "with)",
    )  # fmt: skip
    parser.add_argument(
        "--method", type=Literal["gradcam", "integrated_gradients"], default="gradcam",
        help="attribution method of the overlays",
    )  # fmt: skip
    parser.add_argument(
        "--on_error", type=Literal["raise", "skip"], default="raise",
        help="raise: stop at an unreadable image with an error naming it (no table is "
        "written); skip: go on, list it in the table's error column and count it",
    )  # fmt: skip
    parser.add_argument(
        "--pixels_per_um", type=float | None, default=None,
        help="the images' pixel size (pixels per micrometre): a model trained at a physical "
        "scale resamples them to it, as in training (without it, it warns and resizes them)",
    )  # fmt: skip
    flag(parser, "overwrite", "replace earlier results")


def _load(args: Any) -> TrainedModel:
    return TrainedModel.from_checkpoint(
        args.checkpoint, device=args.device, segmenter=args.segmenter or None,
        segmenter_where="--segmenter",
    )  # fmt: skip


def _run(args: Any, *, table: Path | None, overlays: Path | None) -> int:
    inputs = collect_inputs(args.inputs)
    note = inputs.masks_note()
    if note:
        print(note)
    model = _load(args)
    planned = _plan(args, inputs, model, table=table, overlays=overlays)
    branches = list(model.task.branches())
    stain = model.pipeline.stain is not None
    header = ["path", "predicted", *(f"prob_{c}" for c in model.classes)]
    header += ["stain_normalised"] if stain else []
    header += ["error"] if args.on_error == "skip" else []
    rows: dict[str, list[str]] = {}
    unreadable = passed_through = 0
    paths = inputs.paths
    desc = "classify" if table is not None else "explain"
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        batches = model.batches(
            paths,
            batch_size=args.batch_size,
            num_workers=args.workers,
            on_error=args.on_error,
            pixels_per_um=args.pixels_per_um,
        )
        for names, batch in batches:
            for path, message in batch.get("errors", []):
                rows[path] = [path, *[""] * (len(header) - 2), message]
                unreadable += 1
            if names:
                passed_through += _classify(model, names, batch, rows, header=header)
                if overlays is not None:
                    _explain(model, args.method, names, batch, planned, branches)
            bar.update(len(names) + len(batch.get("errors", [])))
    if table is not None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *(rows[p] for p in paths)])
        atomic_write_text(table, buf.getvalue())
        print(f"{len(rows) - unreadable} images classified: {table}")
    if overlays is not None:
        print(f"overlays ({args.method}): {overlays}")
    if unreadable:
        where = f", listed with their error in {table}" if table is not None else ""
        print(f"{unreadable} unreadable image(s) skipped{where}")
    if passed_through:
        print(f"{passed_through} image(s) had too little tissue for stain normalisation and "
              "were classified as they are (stain_normalised=false)")  # fmt: skip
    return 0


def _classify(
    model: TrainedModel,
    paths: list[str],
    batch: dict[str, Any],
    rows: dict[str, list[str]],
    *,
    header: list[str],
) -> int:
    """Add the rows of one batch; the number of images the stain normaliser passed through."""
    probs = model.predict_batch(batch).numpy()
    flags = model.stain_normalised
    for i, (path, p) in enumerate(zip(paths, probs, strict=True)):
        row = [path, model.classes[int(p.argmax())], *(f"{v:.6f}" for v in p)]
        if flags is not None:
            row.append("true" if bool(flags[i]) else "false")
        rows[path] = row + [""] * (len(header) - len(row))
    return 0 if flags is None else int((~flags).sum())


def _explain(
    model: TrainedModel,
    method: AttributionMethod,
    paths: list[str],
    batch: dict[str, Any],
    planned: dict[str, list[Path]],
    branches: list[str],
) -> None:
    """Write the overlays of one batch (``planned``: each path's files, in branch order).

    Each overlay shows the original image at its own size, titled with the predicted class and
    its probability, with a colour bar (see :func:`~leukemia_wbc.report.overlays.labelled_overlay`).
    """
    from ..data.images import read_rgb
    from ..report.overlays import labelled_overlay

    found = model.explain(batch, method=method)
    for i, path in enumerate(paths):
        original = read_rgb(path)
        target = int(found.target[i])
        for branch, m in found.maps.items():
            png = labelled_overlay(
                original, m[i, 0].cpu(), predicted=model.classes[target],
                probability=float(found.probs[i, target]), method=method, branch=branch,
            )  # fmt: skip
            atomic_write_bytes(planned[path][branches.index(branch)], png)


def _plan(
    args: Any,
    inputs: Inputs,
    model: TrainedModel,
    *,
    table: Path | None,
    overlays: Path | None,
) -> dict[str, list[Path]]:
    """Check every output before any work; the overlay files of each image path."""
    planned: dict[str, list[Path]] = {}
    if overlays is not None and overlays.exists() and not overlays.is_dir():
        raise ValueError(f"{overlays} is a file; expected a folder for the overlays")
    if overlays is not None:
        suffixes = [f"_{branch}.png" for branch in model.task.branches()]
        planned = per_input(inputs.images, overlays, suffixes)
    outputs = [*([table] if table is not None else []), *(f for v in planned.values() for f in v)]
    read = [*inputs.paths, *inputs.lists, args.checkpoint]
    read += [args.segmenter] if args.segmenter and Path(args.segmenter).is_file() else []
    check_outputs(outputs, inputs=read, overwrite=args.overwrite)
    return planned


def _summary(command: Callable[..., int]) -> str:
    """First paragraph of a command's docstring (its ``--help`` description)."""
    return inspect.cleandoc(command.__doc__ or "").split("\n\n")[0]


def classify_parser() -> Any:
    """The options of ``leukemia-wbc classify`` (a ``jsonargparse.ArgumentParser``)."""
    parser = command_parser("leukemia-wbc classify", _summary(run_classify))
    _common(parser)
    parser.add_argument("--out", type=str, default="predictions.csv", help="CSV file")
    parser.add_argument("--overlays", type=str | None, default=None,
                        help="also write attribution overlays into this folder")  # fmt: skip
    return parser


def explain_parser() -> Any:
    """The options of ``leukemia-wbc explain`` (a ``jsonargparse.ArgumentParser``)."""
    parser = command_parser("leukemia-wbc explain", _summary(run_explain))
    _common(parser)
    parser.add_argument("--out", type=str, default="overlays", help="output folder")
    return parser


def run_classify(argv: list[str]) -> int:
    """Class probabilities of images into a CSV (and, with ``--overlays``, attribution PNGs).

    Overlays mirror the inputs' paths under ``--overlays``; nothing existing is replaced
    without ``--overwrite``.

    Args:
        argv: Arguments after ``classify``.

    Returns:
        The exit status.
    """
    args = parse(classify_parser(), argv)
    overlays = Path(args.overlays) if args.overlays is not None else None
    return _run(args, table=Path(args.out), overlays=overlays)


def run_explain(argv: list[str]) -> int:
    """Attribution overlays (one PNG per image and branch) of a checkpoint's predictions.

    Overlays mirror the inputs' paths under ``--out``; nothing existing is replaced without
    ``--overwrite``.

    Args:
        argv: Arguments after ``explain``.

    Returns:
        The exit status.
    """
    args = parse(explain_parser(), argv)
    return _run(args, table=None, overlays=Path(args.out))
