"""The image files a command runs on (the model: :class:`~leukemia_wbc.inference.TrainedModel`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.base import IMAGE_EXTENSIONS

__all__ = ["image_paths"]


def image_paths(inputs: Sequence[str]) -> list[str]:
    """Image files from files, folders (searched recursively) and ``.txt`` / ``.csv`` lists.

    Raises:
        FileNotFoundError: An input that does not exist, or no image found at all.
    """
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
            lines = [x.split(",")[0].strip() for x in path.read_text().splitlines()]
            out += [x for x in lines if x and not x.startswith("#") and x.lower() != "path"]
        elif path.is_file():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"{item} not found (expected an image, a folder or a list)")
    if not out:
        raise FileNotFoundError(f"no images in {list(inputs)} (extensions {IMAGE_EXTENSIONS})")
    return out
