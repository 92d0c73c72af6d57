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

import torch

from .models.segmenter import SEGMENTER_KEY, segmenter_from_state
from .tasks.base import TASK_NAME_KEY
from .tasks.classifier_base import ClassificationTask
from .transforms.registry import check_plain

__all__ = ["TASK_KEY", "build_task", "legacy_pipeline", "read_checkpoint", "registered_tasks"]

#: Checkpoint key of the task's class name (written by the tasks themselves).
TASK_KEY = TASK_NAME_KEY
#: Constructor arguments naming weight files: the checkpoint holds the weights instead.
_WEIGHT_ARGS = ("weights", "cell_weights", "nucleus_weights", "encoder_weights")


def registered_tasks() -> dict[str, type[ClassificationTask]]:
    """The classification tasks a checkpoint may name: the library's and the user's subclasses.

    A subclass is known once its module is imported (defined in the running program); a file
    cannot add one.

    Returns:
        Class name to class.
    """
    from . import tasks  # noqa: F401  (defines the library's tasks)

    found: dict[str, type[ClassificationTask]] = {}
    todo = list(ClassificationTask.__subclasses__())
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo += cls.__subclasses__()
    return found


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
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} not found") from None
    except Exception as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(ckpt, dict) or TASK_KEY not in ckpt:
        raise ValueError(
            f"{path} is not a leukemia_wbc classifier checkpoint (no task recorded; expected a "
            "file saved while training CellClassifier, NucleusClassifier or DualBranchClassifier)"
        )
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
    name = ckpt.get(TASK_KEY)
    known = registered_tasks()
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"{where} holds a {name!r}, which is not a classification task of this program "
            f"(known: {', '.join(sorted(known))}); import the module that defines it first"
        )
    saved = ckpt.get("hyper_parameters") or {}
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: hyper_parameters is not a mapping")
    hparams = {
        k: check_plain(v, f"{where} hyper_parameters[{k!r}]")
        for k, v in saved.items()
        if not k.startswith("_")  # Lightning's _instantiator / _class_path: never followed
    }
    for key in _WEIGHT_ARGS:
        if key in hparams:
            hparams[key] = None  # the weights are in the state dict, the file may not exist here
    hparams.pop("segmenter", None)
    try:
        task = cls(**hparams)
    except TypeError as err:
        raise ValueError(f"{where}: {name} does not take the saved arguments ({err})") from None
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{where} has no state_dict")
    try:
        task.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{where}: the weights do not fit {name} ({err})") from None
    task.segmenter = segmenter_from_state(ckpt.get(SEGMENTER_KEY), where=where)
    return task.eval()


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
