"""What a command will write, checked before it writes anything: outputs are never lost.

Every command that writes results plans its output files first and passes them to
:func:`check_outputs`, which refuses (before any work) two inputs that would write one file, an
output that is one of the inputs (always), and an output that exists already (unless
``--overwrite``). :func:`per_input` builds the per-input file names from the output names
``collect_inputs`` (``_commands/_inference.py``) gives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._inference import InputImage

__all__ = ["check_outputs", "per_input"]


def per_input(
    images: Sequence[InputImage], folder: Path, suffixes: Sequence[str]
) -> dict[str, list[Path]]:
    """The files written per input image: ``folder / f"{name}{suffix}"`` for each suffix.

    Args:
        images: The inputs (their :attr:`~InputImage.name` mirrors their place).
        folder: The output folder.
        suffixes: What follows the name, e.g. ``("_overlay.png", "_cells.csv")``.

    Returns:
        Image path to its output files, in ``suffixes`` order.

    Raises:
        ValueError: Two inputs that would write the same file (compared case-insensitively:
            some file systems are), naming both.
    """
    planned: dict[str, list[Path]] = {}
    owner: dict[str, InputImage] = {}
    for image in images:
        files = [folder / f"{image.name}{suffix}" for suffix in suffixes]
        key = image.name.casefold()
        if key in owner:
            other = owner[key]
            raise ValueError(
                f"{other.path} and {image.path} would write the same {image.name}{suffixes[0]} "
                f"in {folder}; give their common folder as the input (outputs mirror the paths "
                "under it) or run them into separate output folders"
            )
        owner[key] = image
        planned[image.path] = files
    return planned


def check_outputs(
    outputs: Iterable[Path], *, inputs: Iterable[str | os.PathLike[str]], overwrite: bool
) -> None:
    """Refuse outputs that would replace an input, or an existing file without ``overwrite``.

    Args:
        outputs: Every file the command will write.
        inputs: Every file it reads (images, lists, checkpoints): never overwritten.
        overwrite: Whether existing outputs may be replaced (``--overwrite``).

    Raises:
        ValueError: An output that is one of the inputs, or an existing folder where a file
            goes.
        FileExistsError: An output that exists, without ``overwrite`` (the message names the
            first and counts them).
    """
    planned = list(outputs)
    read = {_identity(p): os.fspath(p) for p in inputs}
    for out in planned:
        given = read.get(_identity(out))
        if given is not None:
            alias = f" (given as {given})" if given != os.fspath(out) else ""
            raise ValueError(
                f"{out} is one of the inputs{alias}; an input is never overwritten, even with "
                "--overwrite: choose another output"
            )
        if out.is_dir():
            raise ValueError(f"{out} is a folder; expected a file name there")
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} exists"
            + (f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else "")
            + "; pass --overwrite or another --out"
        )


def _identity(path: str | os.PathLike[str]) -> str:
    """One spelling per file: absolute, symbolic links resolved, case as the system compares."""
    return os.path.normcase(os.path.realpath(path))
