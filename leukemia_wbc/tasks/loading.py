"""Rebuilding a task from its checkpoint without running anything the file names.

Lightning's ``load_from_checkpoint`` follows the ``_instantiator`` and ``_class_path`` a
checkpoint's hyperparameters carry (``LightningCLI`` writes them), and the hyperparameters are
passed to the constructor as they are. Here instead:

* the file is read with ``weights_only=True`` (tensors and plain containers only);
* the class is the one asked for, or one of its subclasses *defined in the running program*
  (the library's, or a user's once their module is imported), looked up by the name the task
  recorded; a file cannot name a module to import;
* every hyperparameter must be plain data (numbers, strings, booleans, lists, string-keyed
  dicts; no ``class_path``), entries starting with ``_`` are ignored;
* arguments naming weight files (``weights=``, ``encoder_weights=``, ...) are dropped: the
  trained weights are in the checkpoint, so the original file need not exist any more.

:meth:`~leukemia_wbc.tasks.base.BaseTask.load_from_checkpoint` and
:class:`~leukemia_wbc.inference.TrainedModel` both go through :func:`rebuild_task`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, ClassVar, TypeVar

import lightning.pytorch as pl
import torch

from .._safe_load import load_torch_file
from ..transforms.registry import check_plain
from .optim import upgrade_hparams

__all__ = [
    "TASK_NAME_KEY",
    "CheckpointLoading",
    "load_task",
    "plain_hparams",
    "read_task_checkpoint",
    "rebuild_task",
    "task_classes",
]

#: Checkpoint key of the class name of the task that saved it (written by every task).
TASK_NAME_KEY = "leukemia_wbc_task"


class CheckpointLoading(pl.LightningModule):
    """The checkpoint side of every task: its hooks and a safe ``load_from_checkpoint``.

    :class:`~leukemia_wbc.tasks.base.BaseTask` builds on it; a task overrides
    :attr:`weight_arguments`, :meth:`arguments_from_checkpoint` or
    :meth:`restore_from_checkpoint`, never the loading itself.
    """

    #: Constructor arguments naming weight files, dropped when a checkpoint is loaded.
    weight_arguments: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def arguments_from_checkpoint(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from a checkpoint's (plain, checked) hyperparameters.

        The base class sets every argument of :attr:`weight_arguments` to ``None``: the trained
        weights are in the checkpoint, so the file the task started from need not exist any
        more. Override to drop or translate more.

        Args:
            hparams: The saved hyperparameters, plain data only.

        Returns:
            The arguments to build the task with.
        """
        return {k: None if k in cls.weight_arguments else v for k, v in hparams.items()}

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], *, where: str) -> None:
        """Restore what the constructor does not, before the weights are loaded (none here).

        Args:
            checkpoint: The checkpoint dict (read with ``weights_only=True``).
            where: The file (for messages).
        """

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild a task from its checkpoint without running anything the file names.

        Unlike Lightning's method of the same name, nothing in the file chooses a class or a
        function (see the module's docstring). The file is read with ``weights_only=True``;
        the task is this class or a subclass defined in the program.

        Args:
            checkpoint_path: The checkpoint file.
            map_location: Device to move the task to (``None``: the CPU).
            hparams_file: Not supported (the hyperparameters are in the checkpoint).
            strict: Whether every weight must fit (default ``True``).
            weights_only: Only ``None`` or ``True``: the file is never unpickled freely.
            **kwargs: Constructor arguments replacing the saved ones.

        Returns:
            The task, in evaluation mode.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not a checkpoint of this class (the message names the class it holds),
                hyperparameters that are not plain data, or weights that do not fit.
        """
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: the checkpoint holds the arguments")
        if weights_only is False:
            raise ValueError(
                "weights_only=False is refused: checkpoints are read as tensors and plain data"
            )
        return load_task(
            cls, checkpoint_path, map_location=map_location, strict=strict, overrides=kwargs
        )


T = TypeVar("T", bound=CheckpointLoading)


def task_classes(base: type[T]) -> dict[str, type[T]]:
    """``base`` and its subclasses defined in the running program, by class name.

    A file cannot add to this set: a subclass is known once the module that defines it has been
    imported by the program itself.

    Args:
        base: The class asked for.

    Returns:
        Class name to class (the first defined wins on a repeated name); abstract classes left
        out.
    """
    found: dict[str, type[T]] = {}
    todo: list[type[T]] = [base]
    while todo:
        cls = todo.pop(0)
        if not inspect.isabstract(cls):
            found.setdefault(cls.__name__, cls)
        todo += cls.__subclasses__()
    return found


def read_task_checkpoint(path: str | os.PathLike[str], *, where: str = "") -> dict[str, Any]:
    """Read a task checkpoint with ``weights_only=True``.

    Args:
        path: The file.
        where: The argument that named it (for messages).

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a readable checkpoint of this library.
    """
    what = "a checkpoint of a leukemia_wbc task (a .ckpt written while training)"
    ckpt = load_torch_file(path, what=what, where=where)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{path} is not {what} (it holds no state_dict)")
    return ckpt


def plain_hparams(saved: Any, where: str) -> dict[str, Any]:
    """A checkpoint's hyperparameters as plain constructor arguments.

    Args:
        saved: ``checkpoint["hyper_parameters"]``.
        where: The file (for messages).

    Returns:
        The arguments: entries starting with ``_`` (Lightning's ``_instantiator`` and
        ``_class_path``) left out, flat optimiser settings of old files gathered into ``optim``.

    Raises:
        ValueError: Not a mapping, or a value that is not plain data (e.g. a ``class_path``).
    """
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: hyper_parameters is a {type(saved).__name__}, not a mapping")
    kept = {
        k: check_plain(v, f"{where} hyper_parameters[{k!r}]")
        for k, v in saved.items()
        if isinstance(k, str) and not k.startswith("_")  # never followed: see module docstring
    }
    return upgrade_hparams(kept)


def rebuild_task(
    ckpt: dict[str, Any],
    base: type[T],
    *,
    where: str = "checkpoint",
    strict: bool = True,
    overrides: dict[str, Any] | None = None,
) -> T:
    """The task a checkpoint records, rebuilt as ``base`` or a known subclass, with its weights.

    Args:
        ckpt: What :func:`read_task_checkpoint` returned.
        base: The class asked for.
        where: The file (for messages).
        strict: Whether every weight must fit (``load_state_dict(strict=...)``).
        overrides: Constructor arguments that replace the saved ones (the caller's own code:
            not checked).

    Returns:
        The task, on the CPU, in evaluation mode.

    Raises:
        ValueError: A task name that is not ``base`` or a subclass of it defined in this
            program, hyperparameters that are not plain data, or weights that do not fit.
    """
    known = task_classes(base)
    name = ckpt.get(TASK_NAME_KEY, base.__name__)
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None:
        if isinstance(name, str) and name in task_classes(CheckpointLoading):
            raise ValueError(
                f"{where} holds a {name}, not a {base.__name__}: load it with "
                f"{name}.load_from_checkpoint"
            )
        raise ValueError(
            f"{where} holds a {name!r}, which is not {base.__name__} or a subclass defined in "
            f"this program (known: {', '.join(sorted(known))}); import the module that defines "
            "it first"
        )
    hparams = cls.arguments_from_checkpoint(plain_hparams(ckpt.get("hyper_parameters"), where))
    hparams.update(overrides or {})
    try:
        task = cls(**hparams)
    except TypeError as err:
        raise ValueError(f"{where}: {name} does not take the saved arguments ({err})") from None
    task.restore_from_checkpoint(ckpt, where=where)
    try:
        task.load_state_dict(ckpt["state_dict"], strict=strict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{where}: the weights do not fit {name} ({first})") from None
    return task.eval()


def load_task(
    base: type[T],
    path: str | os.PathLike[str],
    *,
    map_location: Any = None,
    strict: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Read and rebuild a task checkpoint (what ``BaseTask.load_from_checkpoint`` does).

    Args:
        base: The class asked for.
        path: The ``.ckpt`` file.
        map_location: A device (string or ``torch.device``) to move the task to; ``None``
            keeps it on the CPU.
        strict: Whether every weight must fit (default ``True``).
        overrides: Constructor arguments that replace the saved ones.

    Returns:
        The task, in evaluation mode.

    Raises:
        FileNotFoundError: No such file.
        ValueError: See :func:`read_task_checkpoint` and :func:`rebuild_task`.
    """
    ckpt = read_task_checkpoint(path)
    task = rebuild_task(
        ckpt, base, where=os.fspath(path), strict=True if strict is None else strict,
        overrides=overrides,
    )  # fmt: skip
    if isinstance(map_location, (str, torch.device)):
        task = task.to(map_location)
    return task
