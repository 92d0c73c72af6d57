"""File-system helpers shared by the dataset loaders (private)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from .images import IMAGE_EXTENSIONS

__all__ = ["find_dirs", "is_image", "list_images", "require_dir"]


def is_image(path: Path) -> bool:
    """Whether ``path`` has an image suffix and is not a hidden or macOS resource file."""
    name = path.name
    return path.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (optionally all sub-folders), sorted by path.

    Args:
        folder: Folder to list.
        recursive: Also descend into sub-folders.

    Returns:
        Sorted image paths; hidden files and non-image files are left out.
    """
    it: Iterator[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image(p))


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise an error that shows the expected layout.

    Args:
        path: Folder that must exist.
        dataset: Dataset name for the message.
        layout: A short description of the expected layout.

    Returns:
        ``path`` unchanged.

    Raises:
        FileNotFoundError: ``path`` is not an existing folder.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: folder {path} not found; expected layout: {layout}")
    return path


def find_dirs(root: Path, names: Sequence[str]) -> list[Path]:
    """All folders under ``root`` (``root`` included) whose name is one of ``names``.

    Hidden folders and macOS resource-fork copies (``__MACOSX``) are not searched.

    Args:
        root: Where to search.
        names: Folder names to match exactly.

    Returns:
        Matching folders, sorted by path.
    """
    wanted = set(names)
    found = [root] if root.name in wanted else []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        found.extend(Path(dirpath, d) for d in dirnames if d in wanted)
    return sorted(found)
