"""Drawing a smear's cells: outlined nuclei, boxes by class, a header strip (plain arrays in)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

__all__ = ["class_colours", "draw_cells"]

#: Blasts are drawn red; other classes take these colours in class order.
_BLAST = (230, 25, 25)
_OTHERS = ((20, 160, 60), (30, 110, 230), (240, 150, 0), (150, 60, 200), (0, 170, 170))


def class_colours(
    classes: Sequence[str], blast_classes: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """The drawing colour of each class: red for blasts, distinct colours for the others.

    Args:
        classes: The class names.
        blast_classes: The classes drawn as blasts.

    Returns:
        Class name to an RGB triple.
    """
    others = iter(_OTHERS * (len(classes) // len(_OTHERS) + 1))
    return {c: _BLAST if c in blast_classes else next(others) for c in classes}


def draw_cells(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray,
    names: Sequence[str],
    scores: Sequence[float],
    colours: dict[str, tuple[int, int, int]],
    *,
    header: str | None = None,
) -> np.ndarray:
    """Draw cells on an image.

    Each cell gets its nucleus outlined and its box drawn in its class's colour, labelled with
    the class and its score; ``header`` (a few lines of text) goes in a strip above the image.

    Args:
        image: ``uint8`` ``(H, W, 3)``.
        masks: ``bool`` ``(N, H, W)`` nucleus masks.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels.
        names: The class name of each cell.
        scores: The probability shown beside each name.
        colours: Class name to RGB (see :func:`class_colours`).
        header: Text of the header strip; ``None`` for none.

    Returns:
        ``uint8`` ``(H', W, 3)`` image (``H' = H`` without a header).

    Raises:
        ValueError: ``masks``, ``boxes``, ``names`` and ``scores`` of different lengths.
    """
    if not len(masks) == len(boxes) == len(names) == len(scores):
        raise ValueError(
            f"one mask, box, name and score per cell, got {len(masks)}, {len(boxes)}, "
            f"{len(names)}, {len(scores)}"
        )
    image = image.copy()
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
    for box, name, p in zip(np.asarray(boxes).tolist(), names, scores, strict=True):
        draw.rectangle(box, outline=colours[name], width=width)
        draw.text(
            (box[0] + 2, max(box[1] - 12, 0)), f"{name} {p:.2f}", fill=colours[name], font=font
        )
    if header is None:
        return np.asarray(canvas)
    strip = Image.new("RGB", (canvas.width, 48), (255, 255, 255))
    ImageDraw.Draw(strip).multiline_text((6, 4), header, fill=(0, 0, 0), font=font, spacing=3)
    out = Image.new("RGB", (canvas.width, canvas.height + strip.height), (255, 255, 255))
    out.paste(strip, (0, 0))
    out.paste(canvas, (0, strip.height))
    return np.asarray(out)
