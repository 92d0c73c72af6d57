"""Reading ``torch.save`` files without running code, with one-line errors that name the file.

Every file the library reads with PyTorch (checkpoints, weights, fold shards) goes through
:func:`load_torch_file`: ``weights_only=True`` always, and PyTorch's own messages (which end in
advice to retry with ``weights_only=False``, i.e. to run the file's code) are replaced by what
the file is not and what was expected.

Public inside the library (no leading underscore on the names), private to its users.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_torch_file", "refused_code", "unreadable_reason"]


def refused_code(err: BaseException) -> bool:
    """Whether ``torch.load(..., weights_only=True)`` refused the file for holding code.

    Args:
        err: What ``torch.load`` raised.

    Returns:
        True when the file holds Python objects other than tensors and plain data.
    """
    return isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err)


def unreadable_reason(path: Path, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words a user can act on.

    Args:
        path: The file.
        err: What ``torch.load`` raised.

    Returns:
        A short reason, never PyTorch's advice to load with ``weights_only=False``.
    """
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError:
        is_zip = False
    if not is_zip:
        return "not the zip archive torch.save writes: truncated, damaged or another kind of file"
    if refused_code(err):
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        which = f" (it names {named[1]})" if named is not None else ""
        return (
            f"it holds Python objects other than tensors and plain data{which}, and loading "
            "them could run code: refused"
        )
    if isinstance(err, (EOFError, zipfile.BadZipFile)) or "central directory" in str(err):
        return "a damaged or truncated archive"
    first = (str(err).strip().splitlines() or [""])[0]
    if "weights_only" in first:
        first = "unreadable records"
    return f"unreadable ({type(err).__name__}: {first[:120]})"


def load_torch_file(path: str | os.PathLike[str], *, what: str, where: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a one-line error.

    Args:
        path: The file.
        what: What the file should be, for messages (e.g. ``"a checkpoint of this library"``).
        where: The argument or option that named it (prefixed to messages), if any.

    Returns:
        What the file holds (tensors and plain containers only).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not readable as ``weights_only`` data: ``"<where>: <file>
            cannot be loaded (<why>); expected <what>"``.
    """
    prefix = f"{where}: " if where else ""
    if not os.fspath(path).strip():  # Path("") is the working directory
        raise FileNotFoundError(f"{prefix}an empty file name; expected {what}")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{prefix}{file} not found; expected {what}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load's errors on foreign files are many and cryptic
        reason = unreadable_reason(file, err)
        raise ValueError(f"{prefix}{file} cannot be loaded ({reason}); expected {what}") from None
