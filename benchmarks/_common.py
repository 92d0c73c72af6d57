"""Shared helpers of the benchmark scripts: environment record and JSON-lines output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED_DATA = HERE.parent.parent / "shared" / "data"


def _git(*args: str) -> str:
    """The stripped output of a git command run in this folder."""
    return subprocess.run(
        ["git", *args], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout.strip()


def median_seconds(
    fn: Callable[[], object], repeats: int, device: str, *, warmup: int = 1
) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones.

    On CUDA the device is synchronised around every run, so queued kernels are counted.
    """
    times = []
    for i in range(repeats + warmup):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def environment(
    packages: tuple[str, ...] = ("torch", "torchvision", "numpy", "pillow", "leukemia-wbc"),
) -> dict[str, Any]:
    """Commit, machine and library versions, for the record."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        if _git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"  # the measured code is not exactly the commit's
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "versions": versions,
    }


def append_record(name: str, figures: dict[str, Any]) -> Path:
    """Append one JSON record (environment + figures) to ``results/<name>.jsonl``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps({**environment(), "figures": figures}) + "\n")
    return path


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A plain-text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def two_lab_scores(result: Any, source: Any, target: Any) -> dict[str, Any]:
    """A segmentation_WBC cross-validation's scores: Dataset 1, its stain shift, Dataset 2.

    Per-fold accuracy and balanced accuracy on Dataset 1's held-out cells, the lowest
    accuracy under the strongest stain rotation or concentration shift of the perturbation
    suite, and every fold's model on all of Dataset 2 (its basophils left out).

    Args:
        result: The ``CVResult`` on Dataset 1.
        source: The dataset it ran on.
        target: Dataset 2.

    Returns:
        ``dataset1``, ``dataset1_balanced``, ``stain_shift``, ``dataset2``, ``dataset2_folds``.
    """
    from leukemia_wbc.evaluation import cross_dataset_test, cv_robustness

    shift = cv_robustness(result, source, progress=False,
                          perturbations=("stain_rotation", "stain_concentration"),
                          strengths=(1.0,))  # fmt: skip
    other = cross_dataset_test(result, target, class_map={"basophil": None}, progress=False)
    return {
        "dataset1": [f.metrics["accuracy"] for f in result.folds],
        "dataset1_balanced": [f.metrics["balanced_accuracy"] for f in result.folds],
        "stain_shift": shift.worst("stain"),
        "dataset2": other.summary()["accuracy"].mean,
        "dataset2_folds": [m["accuracy"] for m in other.fold_metrics],
    }
