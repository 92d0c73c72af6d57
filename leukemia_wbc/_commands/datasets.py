"""``leukemia-wbc datasets``: the known datasets, and ``verify NAME ROOT`` for a folder."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from typing import Any

from tqdm.auto import tqdm

from ..data import (
    ALLIDB1,
    ALLIDB2,
    CNMC2019,
    PBC,
    AMLCytomorphology,
    ImageFolderWBC,
    ImageReadError,
    RaabinWBC,
    SegmentationWBC2018,
    UnlabelledImages,
    WBCDataset,
)
from ._parser import command_parser, parse, underscored

__all__ = [
    "DATASETS", "DECODE_LIMIT", "datasets_parser", "decode_all", "describe", "run_datasets",
]  # fmt: skip

#: ``datasets verify`` decodes every file by default up to this many images (``--decode`` or
#: ``--no_decode`` choose for any size).
DECODE_LIMIT = 5000

#: Command-line name of every dataset loader.
DATASETS: dict[str, type[WBCDataset]] = {
    "cnmc2019": CNMC2019,
    "all_idb1": ALLIDB1,
    "all_idb2": ALLIDB2,
    "raabin": RaabinWBC,
    "pbc": PBC,
    "aml_cytomorphology": AMLCytomorphology,
    "segmentation_wbc": SegmentationWBC2018,
    "folder": ImageFolderWBC,
    "unlabelled": UnlabelledImages,
}


def describe(cls: type[WBCDataset]) -> tuple[str, str]:
    """The first docstring line and the ``Source:`` sentence of a dataset class."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    summary = doc.splitlines()[0] if doc else cls.__name__
    flat = " ".join(doc.split())
    found = re.search(r"Source: (.+?\.)(?: [A-Z]|$)", flat)
    return summary, found.group(1) if found else "see the class docstring"


def _list() -> int:
    for name, cls in DATASETS.items():
        summary, source = describe(cls)
        print(f"{name} ({cls.__name__}): {summary}\n    source: {source}")
    print("\nLayouts: `python -c \"import leukemia_wbc.data as d; help(d.CNMC2019)\"` "
          "(each class documents the folder layout it reads).")  # fmt: skip
    return 0


def decode_all(
    ds: WBCDataset, *, progress: bool | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """Decode every image and mask of a dataset, as training would, at the files' own size.

    Args:
        ds: The dataset.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        ``(failures, empty)``: ``(file, reason)`` of each sample that cannot be decoded, and
        the images whose nucleus mask is empty (all background; kept in training).
    """
    view = ds.with_size(None)
    failures: list[tuple[str, str]] = []
    empty: list[str] = []
    disable = None if progress is None else not progress
    for i in tqdm(range(len(view)), desc="decode", unit="image", disable=disable):
        path = view.records[i].path
        try:
            sample = view.load_sample(i)
        except (ImageReadError, ValueError, OSError) as err:
            reason = str(err).removeprefix(f"{path}: ")
            failures.append((path, reason or type(err).__name__))
            continue
        mask = sample.get("mask")
        if mask is not None and not bool(mask.any()):
            empty.append(path)
    return failures, empty


def _verify(name: str, root: str, decode: bool | None) -> int:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    cls = DATASETS[name]
    ds = cls(root)  # type: ignore[arg-type, call-arg]  # every loader takes a root
    labels = Counter(int(x) for x in ds.labels)
    print(f"{cls.__name__} at {root}: {len(ds)} images, {len(set(ds.groups))} groups, "
          f"masks: {'yes' if ds.has_masks else 'no'}")  # fmt: skip
    for i, cls_name in enumerate(ds.classes):
        print(f"  {cls_name:24s} {labels.get(i, 0)}")
    if labels.get(-1):
        print(f"  {'(unlabelled)':24s} {labels[-1]}")
    if decode is None:
        decode = len(ds) <= DECODE_LIMIT
        if not decode:
            print(f"not decoded: {len(ds)} images are more than {DECODE_LIMIT}; pass --decode "
                  "to decode every file (unreadable ones are found only then)")  # fmt: skip
    if not decode:
        return 0
    failures, empty = decode_all(ds)
    note = f"; {len(empty)} with an empty nucleus mask (kept)" if empty else ""
    if not failures:
        print(f"decoded: all {len(ds)} images readable{note}")
        return 0
    print(f"decoded: {len(failures)} of {len(ds)} images cannot be read{note}:")
    for path, reason in failures:
        print(f"  {path}: {reason}")
    return 1


def datasets_parser() -> Any:
    """The options of ``leukemia-wbc datasets`` (a ``jsonargparse.ArgumentParser``)."""
    parser = command_parser(
        "leukemia-wbc datasets",
        "The known datasets (their loaders, layouts and sources), or `verify NAME ROOT` to "
        "check a folder.",
    )
    commands = parser.add_subcommands(required=False, dest="action")
    commands.add_subcommand("verify", _verify_parser(),
                            help="check a dataset folder and print its counts")  # fmt: skip
    return parser


def _verify_parser() -> Any:
    """The options of ``leukemia-wbc datasets verify``."""
    from jsonargparse import ActionYesNo, ArgumentParser

    verify = ArgumentParser(exit_on_error=False, description="Check a dataset folder: counts "
                            "per class and group; decode the files.")  # fmt: skip
    verify.add_argument("name", type=str, help=f"one of: {', '.join(DATASETS)}")
    verify.add_argument("root", type=str, help="the dataset's root folder")
    verify.add_argument(
        "--decode", action=ActionYesNo(no_prefix="no_"), default=None,
        help=f"decode every image and mask and list those that fail (exit status 1); "
        f"--no_decode only counts; default: on up to {DECODE_LIMIT} images",
    )  # fmt: skip
    return verify


def run_datasets(argv: list[str]) -> int:
    """``datasets`` lists the loaders; ``datasets verify NAME ROOT`` checks a folder.

    ``verify`` prints the counts and, with ``--decode`` (the default up to
    :data:`DECODE_LIMIT` images), decodes every image and mask and lists the files that
    fail, with the reason.

    Args:
        argv: Arguments after ``datasets``.

    Returns:
        The exit status: 1 when a decoded file failed, else 0.

    Raises:
        ValueError: An unknown dataset name.
        FileNotFoundError: From the loader, naming what is missing.
    """
    args = parse(datasets_parser(), underscored(argv, _verify_parser()))
    if args.action == "verify":
        return _verify(args.verify.name, args.verify.root, args.verify.decode)
    return _list()
