"""Reading a classifier checkpoint safely and rebuilding its task.

The checkpoint is read with ``weights_only=True``; the task class is looked up by name among the
classification tasks defined in the running program (the library's and the user's own
subclasses), and rebuilt from hyperparameters that must be plain values (Lightning's
``_instantiator`` / ``_class_path`` entries are ignored). Nothing a file contains chooses a
module to import or a function to call. :class:`~leukemia_wbc.inference.TrainedModel` is the
object users load; this module is the step underneath it.
"""

from __future__ import annotations

import os
from typing import Any

from ._safe_load import load_torch_file
from .tasks.base import TASK_NAME_KEY
from .tasks.classifier_base import ClassificationTask
from .tasks.loading import rebuild_task, task_classes

__all__ = ["TASK_KEY", "build_task", "legacy_pipeline", "read_checkpoint", "registered_tasks"]

#: Checkpoint key of the task's class name (written by the tasks themselves).
TASK_KEY = TASK_NAME_KEY
#: What a classifier checkpoint is, for messages.
_EXPECTED = (
    "a leukemia_wbc classifier checkpoint (a .ckpt saved while training CellClassifier, "
    "NucleusClassifier or DualBranchClassifier)"
)


def registered_tasks() -> dict[str, type[ClassificationTask]]:
    """The classification tasks a checkpoint may name: the library's and the user's subclasses.

    A subclass is known once its module is imported (defined in the running program); a file
    cannot add one.

    Returns:
        Class name to class.
    """
    from . import tasks  # noqa: F401  (defines the library's tasks)

    return task_classes(ClassificationTask)  # type: ignore[type-abstract]


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a classifier checkpoint with ``weights_only=True``.

    Args:
        path: The file.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a readable checkpoint, or not one of a classifier of this library.
    """
    ckpt = load_torch_file(path, what=_EXPECTED)
    if not isinstance(ckpt, dict) or ckpt.get(TASK_KEY) not in registered_tasks():
        held = ckpt.get(TASK_KEY) if isinstance(ckpt, dict) else None
        what = f"a {held}" if isinstance(held, str) else "no classifier"
        raise ValueError(f"{path} is not {_EXPECTED} (it holds {what})")
    return ckpt


def build_task(ckpt: dict[str, Any], *, where: str = "checkpoint") -> ClassificationTask:
    """Rebuild the task a checkpoint records, with its weights and segmenter.

    Args:
        ckpt: What :func:`read_checkpoint` returned.
        where: The file (for messages).

    Returns:
        The task, in evaluation mode, on the CPU.

    Raises:
        ValueError: An unknown task name, hyperparameters that are not plain values (e.g. a
            ``class_path`` to import), or weights that do not fit.
    """
    return rebuild_task(ckpt, ClassificationTask, where=where)  # type: ignore[type-abstract]


def legacy_pipeline(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The pipeline record of checkpoints written before the pipeline had its own key.

    Args:
        ckpt: What :func:`read_checkpoint` returned.

    Returns:
        The record :meth:`~leukemia_wbc.transforms.DevicePipeline.from_record` reads.
    """
    hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    state = dict((ckpt.get("WBCDataModule") or {}).get("pipeline", {}))
    equalize = {"hist": "HistogramEqualization", "clahe": "CLAHE"}.get(hp.get("equalize", "none"))
    config = {
        "stain": {"type": "MacenkoNormalizer"} if any(k.startswith("stain.") for k in state)
        else None,
        "background": {"type": "BackgroundRemoval"} if hp.get("background_removal") else None,
        "equalize": None if equalize is None else {"type": equalize},
        "mean": hp.get("mean", (0.485, 0.456, 0.406)),
        "std": hp.get("std", (0.229, 0.224, 0.225)),
        "colour": hp.get("colour", "rgb"),
    }  # fmt: skip
    size = hp.get("size") or 224
    side = [size, size] if isinstance(size, int) else list(size)
    keep = ("stain.", "mean", "std")
    return {"config": config, "state": {k: v for k, v in state.items() if k.startswith(keep)},
            "size": side}  # fmt: skip
