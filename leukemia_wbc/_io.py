"""Helpers shared by every package: atomic writes, PNG output, JSON-safe values, Markdown rows.

A file written here is absent or complete, never half-written.

Public inside the library (no leading underscore on the names), private to its users.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["atomic_write_bytes", "atomic_write_text", "json_safe", "markdown_row", "write_png"]


def _umask() -> int:
    """The process's file-creation mask.

    Read from ``/proc/self/status`` where there is one (it leaves the mask untouched, also for
    other threads); elsewhere by setting it and putting it back at once.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give it (``0666`` less the
    umask), so results can be shared as any other file.

    Args:
        path: Destination file (its folder is created if needed).
        data: The content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp creates the file private (0600); give it the permissions open() would
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file.
        text: The content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` ``uint8`` RGB array as a PNG file, atomically.

    Args:
        path: Destination file.
        rgb: The image.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def json_safe(value: Any) -> Any:
    """``value`` with every ``NaN`` float replaced by ``None`` (JSON has no NaN), recursively.

    Args:
        value: A float, dict, list or tuple (nested), or any other value (returned as is).

    Returns:
        The same structure, tuples as lists.
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def markdown_row(cells: Sequence[str]) -> str:
    """One row of a Markdown table.

    Args:
        cells: The cells' text.

    Returns:
        ``| a | b |``.
    """
    return "| " + " | ".join(cells) + " |"
