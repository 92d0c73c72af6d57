"""The image files a command runs on (the model: :class:`~leukemia_wbc.inference.TrainedModel`).

:func:`collect_inputs` turns the command line's inputs (images, folders, ``.txt`` / ``.csv``
lists) into image files and gives each one its output name, the one name every command that
writes a file per input uses (``classify --overlays``, ``explain``, ``analyze-smear``):

* a file found in a folder argument: its path under that folder (``Dataset 1/001.bmp`` in
  ``segmentation_WBC/`` is named ``Dataset 1/001``);
* a file given by itself or in a list: its path under the common folder of all such files
  (``a/001.bmp`` and ``b/001.bmp`` are ``a/001`` and ``b/001``; one file is its stem).

Folders are searched recursively, hidden files and folders and ``__MACOSX`` left out. Mask files
kept beside the images are left out too (and reported): a file is a mask when it is a
candidate by its place (it shares its stem with another image of its folder, as the
segmentation_WBC masks ``NNN.png`` beside ``NNN.bmp``; it lies in a ``masks`` sub-folder, as
:meth:`~leukemia_wbc.data.SyntheticWBC.to_folder` writes them; or its stem ends in ``mask``) and
its content is a mask: at most :data:`MASK_MAX_COLOURS` distinct colours, readable by
:func:`~leukemia_wbc.data.decode_mask`. Files given by name are never left out.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..data import IMAGE_EXTENSIONS, ImageReadError, decode_mask

__all__ = ["MASK_MAX_COLOURS", "InputImage", "Inputs", "collect_inputs"]

#: A mask has at most this many distinct colours (segmentation_WBC's have 3, a few up to 9);
#: a photograph of a cell has thousands.
MASK_MAX_COLOURS = 16

_MASK_STEM = re.compile(r"(?:^|[_\-. ])masks?$", re.IGNORECASE)


@dataclass(frozen=True)
class InputImage:
    """One image file to run on.

    Attributes:
        path: The file: as given, as found in a folder, or a list's entry joined to the list's
            folder (so it identifies the file from the working directory).
        name: Its output name: its path under the folder argument it came from, or under the
            common folder of the files given by name, POSIX-style and without suffix.
        source: The command-line argument it came from.
    """

    path: str
    name: str
    source: str


@dataclass
class Inputs:
    """The images of a command's inputs, and the mask files left out of its folders.

    Attributes:
        images: The images, in order (each folder sorted).
        masks: Mask files found beside the images and left out.
        lists: The ``.txt`` / ``.csv`` list files among the inputs.
    """

    images: list[InputImage]
    masks: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """The image paths, in order."""
        return [image.path for image in self.images]

    def masks_note(self, limit: int = 3) -> str | None:
        """One line about the mask files left out (``None`` when there were none).

        Args:
            limit: How many of them to name.

        Returns:
            The line.
        """
        if not self.masks:
            return None
        shown = ", ".join(self.masks[:limit])
        more = f" and {len(self.masks) - limit} more" if len(self.masks) > limit else ""
        return f"left out {len(self.masks)} mask file(s) beside the images: {shown}{more}"


def collect_inputs(inputs: Sequence[str]) -> Inputs:
    """Image files and their output names from files, folders and ``.txt`` / ``.csv`` lists.

    A list holds one path per line (``.txt``; blank lines and ``#`` comments skipped) or per row
    (``.csv``: the ``path`` column when the header has one, else the first); a relative path in
    it is relative to the list's folder.

    Args:
        inputs: The command line's inputs.

    Returns:
        The images (see the module docstring for their names) and the mask files left out.

    Raises:
        FileNotFoundError: An input that does not exist, or no image found at all.
        ValueError: One file reached by two inputs (it would be two rows of one file).
    """
    found: list[InputImage] = []
    masks: list[str] = []
    lists: list[str] = []
    singles: list[tuple[str, str]] = []  # (path, source)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images, skipped = _folder_images(path)
            masks += [str(p) for p in skipped]
            found += [InputImage(str(p), _name(p.relative_to(path)), item) for p in images]
        elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
            lists.append(item)
            singles += [(entry, item) for entry in _list_entries(path)]
        elif path.is_file():
            singles.append((item, item))
        else:
            raise FileNotFoundError(f"{item} not found (expected an image, a folder or a list)")
    if singles:
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in singles])
        found += [
            InputImage(p, _name(Path(os.path.relpath(os.path.abspath(p), base))), source)
            for p, source in singles
        ]
    if not found:
        raise FileNotFoundError(
            f"no images in {list(inputs)} (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    _refuse_duplicates(found)
    return Inputs(found, masks, lists)


def _name(relative: Path) -> str:
    return relative.with_suffix("").as_posix()


def _refuse_duplicates(images: list[InputImage]) -> None:
    seen: dict[str, InputImage] = {}
    for image in images:
        key = os.path.normcase(os.path.abspath(image.path))
        if key in seen:
            first = seen[key]
            raise ValueError(
                f"{image.path} is given twice (by {first.source} and by {image.source}); "
                "expected each image once"
            )
        seen[key] = image


def _list_entries(path: Path) -> list[str]:
    """The paths a ``.txt`` / ``.csv`` list holds, relative ones joined to its folder."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]
        header = [c.strip().casefold() for c in rows[0]] if rows else []
        column = header.index("path") if "path" in header else 0
        entries = [row[column].strip() for row in rows[1 if "path" in header else 0 :]
                   if len(row) > column]  # fmt: skip
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    return [e if os.path.isabs(e) else os.path.join(os.path.dirname(path), e) for e in entries]


def _folder_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The images under ``folder`` (sorted) and the mask files left out of them."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        names = [f for f in filenames if not f.startswith(".")]
        files += [Path(dirpath, f) for f in names if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    files.sort()
    by_stem: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for p in files:
        by_stem[(p.parent, p.stem)].append(p)
    masks: set[Path] = set()
    for p in files:
        under_masks = any(part.casefold() == "masks" for part in p.relative_to(folder).parts[:-1])
        siblings = by_stem[(p.parent, p.stem)]
        candidate = under_masks or len(siblings) > 1 or bool(_MASK_STEM.search(p.stem))
        if candidate and _is_mask(p):
            masks.add(p)
    for group in by_stem.values():  # a stem whose every file reads as a mask: keep them
        if len(group) > 1 and all(p in masks for p in group):
            masks.difference_update(group)
    return [p for p in files if p not in masks], [p for p in files if p in masks]


def _is_mask(path: Path) -> bool:
    """Whether an image file's content is a mask (few colours, readable by decode_mask)."""
    try:
        with Image.open(path) as img:
            if img.getcolors(MASK_MAX_COLOURS) is None:
                return False
        decode_mask(path)
    except (OSError, ValueError, ImageReadError):
        return False  # not readable as a mask: an image (its own errors come when decoded)
    return True
