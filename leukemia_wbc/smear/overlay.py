"""The overlay image of a smear analysis: outlined nuclei, boxes by class, and the blast count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from .analysis import SmearAnalysis

__all__ = ["save_smear_overlay", "smear_overlay"]

#: Blasts are drawn red; other classes take these colours in class order.
_BLAST = (230, 25, 25)
_OTHERS = ((20, 160, 60), (30, 110, 230), (240, 150, 0), (150, 60, 200), (0, 170, 170))


def _colours(analysis: SmearAnalysis) -> dict[str, tuple[int, int, int]]:
    others = iter(_OTHERS * (len(analysis.classes) // len(_OTHERS) + 1))
    return {c: _BLAST if c in analysis.blast_classes else next(others) for c in analysis.classes}


def smear_overlay(analysis: SmearAnalysis, *, header: bool = True) -> np.ndarray:
    """Draw the analysis on its image.

    Each cell gets its nucleus outlined and its box drawn in its class's colour (blasts red),
    labelled with the class and its probability; a header strip above the image states the
    counts and the blast share with its interval.

    Args:
        analysis: The analysis.
        header: Add the header strip.

    Returns:
        ``uint8`` ``(H', W, 3)`` image.
    """
    image = analysis.image.copy()
    colours = _colours(analysis)
    names = analysis.predicted
    masks = analysis.detections.masks.numpy()
    for mask, name in zip(masks, names, strict=True):
        found = ndi.find_objects(mask.astype(np.uint8))
        if not found or found[0] is None:
            continue
        sl = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in found[0])  # erode near it
        part = mask[sl]
        edge = part & ~ndi.binary_erosion(part, iterations=2)
        image[sl][edge] = colours[name]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(min(image.shape[:2]) / 400))
    for i, (box, name) in enumerate(zip(analysis.detections.boxes.tolist(), names, strict=True)):
        draw.rectangle(box, outline=colours[name], width=width)
        p = float(analysis.probabilities[i].max())
        draw.text(
            (box[0] + 2, max(box[1] - 12, 0)), f"{name} {p:.2f}", fill=colours[name], font=font
        )
    if not header:
        return np.asarray(canvas)
    lines = analysis.summary().splitlines()
    text = (
        f"{lines[0]}; " + ", ".join(s.strip() for s in lines[1:-2]) + f"\n{lines[-2]}\n{lines[-1]}"
    )
    strip = Image.new("RGB", (canvas.width, 48), (255, 255, 255))
    ImageDraw.Draw(strip).multiline_text((6, 4), text, fill=(0, 0, 0), font=font, spacing=3)
    out = Image.new("RGB", (canvas.width, canvas.height + strip.height), (255, 255, 255))
    out.paste(strip, (0, 0))
    out.paste(canvas, (0, strip.height))
    return np.asarray(out)


def save_smear_overlay(
    analysis: SmearAnalysis, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write :func:`smear_overlay` to an image file (format from the suffix, e.g. ``.png``).

    Args:
        analysis: The analysis.
        path: Output file; its folder is created.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        FileExistsError: The file exists and ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smear_overlay(analysis)).save(out)
    return out
