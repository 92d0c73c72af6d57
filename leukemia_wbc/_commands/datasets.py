"""``leukemia-wbc datasets``: the known datasets, and ``verify NAME ROOT`` for a folder."""

from __future__ import annotations

import argparse
import inspect
import re
from collections import Counter

from ..data import (
    ALLIDB1,
    ALLIDB2,
    CNMC2019,
    PBC,
    AMLCytomorphology,
    ImageFolderWBC,
    RaabinWBC,
    SegmentationWBC2018,
    WBCDataset,
)

__all__ = ["DATASETS", "describe", "run_datasets"]

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


def _verify(name: str, root: str) -> int:
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
    return 0


def run_datasets(argv: list[str]) -> int:
    """``datasets`` lists the loaders; ``datasets verify NAME ROOT`` checks a folder.

    Args:
        argv: Arguments after ``datasets``.

    Returns:
        The exit status.

    Raises:
        ValueError: An unknown dataset name.
        FileNotFoundError: From the loader, naming what is missing.
    """
    parser = argparse.ArgumentParser(prog="leukemia-wbc datasets")
    sub = parser.add_subparsers(dest="action")
    verify = sub.add_parser("verify", help="check a dataset folder and print its counts")
    verify.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    verify.add_argument("root", help="the dataset's root folder")
    args = parser.parse_args(argv)
    if args.action == "verify":
        return _verify(args.name, args.root)
    return _list()
