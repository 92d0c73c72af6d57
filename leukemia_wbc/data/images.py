"""Image and mask decoding: any file Pillow reads, as RGB ``uint8`` arrays and binary masks.

:func:`read_rgb` converts every mode (grayscale, RGBA, palette, 16-bit) to RGB ``uint8`` and
resizes; :func:`decode_mask` understands the mask encodings of the supported datasets. Every
failure is an :class:`ImageReadError` that names the file. :class:`~leukemia_wbc.data.WBCDataset`
decodes its samples with these functions.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_LEVELS",
    "MASK_TOLERANCE",
    "MAX_OFF_CODE_SHARE",
    "WARN_OFF_CODE_SHARE",
    "ImageReadError",
    "MaskCodeError",
    "decode_mask",
    "image_tensor",
    "read_rgb",
    "resize_mask",
    "resize_rgb",
    "size_pair",
]

#: File suffixes (lower case) that the folder-based loaders treat as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif", ".webp"}
)

_log = logging.getLogger(__name__)


class ImageReadError(RuntimeError):
    """A file that should hold an image or a mask could not be decoded as one.

    The message names the file and says what was expected.
    """


def _to_uint8_rgb(img: Image.Image, path: str) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB ``uint8`` array ``(H, W, 3)``."""
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        # 16-bit and 32-bit grayscale: scale to 8 bit instead of clipping at 255.
        arr = np.asarray(img)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            gray = (arr.astype(np.float64) / 257.0).round()
        elif mode == "F":
            finite = arr[np.isfinite(arr)]
            hi = float(finite.max(initial=1.0)) if finite.size else 1.0
            scale = 255.0 if hi <= 1.0 else 255.0 / hi
            gray = np.nan_to_num(arr.astype(np.float64)) * scale
        else:
            gray = arr.astype(np.float64)
        gray8 = np.clip(gray, 0, 255).astype(np.uint8)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on white (the smear background), not on black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(
            f"{path}: decoded to an array of shape {arr.shape} and dtype {arr.dtype}; "
            "expected an RGB uint8 image"
        )
    return arr


def _open(path: str, what: str) -> Image.Image:
    """Open and fully decode a file with Pillow, turning every failure into ImageReadError."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{path}: the file is empty; expected {what}")
        img = Image.open(path)
        return img
    except ImageReadError:
        raise
    except FileNotFoundError as err:
        raise ImageReadError(f"{path}: no such file; expected {what}") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot be read as {what} ({err})") from err


def size_pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """An output size as ``(height, width)``, checked.

    Args:
        size: ``None``, an int for a square, or ``(height, width)``.

    Returns:
        ``(height, width)`` as ints, or ``None`` when ``size`` is ``None``.

    Raises:
        ValueError: A side that is not positive.
    """
    if size is None:
        return None
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return (size, size)
    h, w = size
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return (int(h), int(w))


def read_rgb(path: str | os.PathLike[str], size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``(H, W, 3)``, optionally resized.

    JPEG files are decoded at a reduced scale when that is still larger than ``size`` (Pillow's
    draft mode), which makes large JPEGs several times cheaper to load.

    Args:
        path: Image file (any format Pillow reads: BMP, JPEG, PNG, TIFF including 16-bit, ...).
        size: ``None`` to keep the size, an int for a square, or ``(height, width)``.

    Returns:
        The image as a contiguous ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ImageReadError: The file is missing, empty, truncated or not an image.
    """
    p = os.fspath(path)
    target = size_pair(size)
    img = _open(p, "an image")
    try:
        with img:
            if target is not None and img.format == "JPEG":
                img.draft("RGB", (target[1], target[0]))
            img.load()
            arr = _to_uint8_rgb(img, p)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{p}: cannot be decoded as an image ({err})") from err
    if target is not None:
        arr = resize_rgb(arr, target)
    return _writable(arr)


def image_tensor(arr: np.ndarray) -> torch.Tensor:
    """Turn an RGB ``uint8`` array ``(H, W, 3)`` into a ``uint8`` tensor ``(3, H, W)``.

    The transpose is done by numpy: torch's parallel strided copy wakes its thread pool for
    every image, which on a small machine competes with the decoding itself.

    Args:
        arr: Image array in channels-last layout.

    Returns:
        A contiguous channels-first tensor that owns a copy of the pixels.
    """
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _writable(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array (Pillow's buffers are read-only; torch wants writable)."""
    if arr.flags.writeable and arr.flags.c_contiguous:
        return arr
    return np.array(arr, order="C")


def resize_rgb(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8`` array to ``(height, width)`` with antialiased bilinear sampling.

    Args:
        arr: Image array ``(H, W, 3)``.
        size: ``(height, width)``.

    Returns:
        The resized array (``arr`` itself when it already has that size).
    """
    if arr.shape[:2] == size:
        return arr
    img = Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img)


#: Grey levels of the three-level mask code (Zheng et al. 2018): background, cytoplasm, nucleus.
MASK_LEVELS: tuple[int, int, int] = (0, 128, 255)
#: A mask pixel within this many grey levels of a code counts as that code (JPEG-like noise).
MASK_TOLERANCE = 10
#: Largest share of a mask's pixels that may lie farther than :data:`MASK_TOLERANCE` from every
#: code; they are read as the nearest code. A mask with more is refused (:class:`MaskCodeError`).
MAX_OFF_CODE_SHARE = 0.01
#: Above this share of off-code pixels a decoded mask is reported with a logged warning (any
#: pixel that is not exactly a code is reported at debug level).
WARN_OFF_CODE_SHARE = 0.001


class MaskCodeError(ImageReadError, ValueError):
    """A mask file whose values are no documented mask code (noise, a soft probability map).

    A :class:`ImageReadError` (so ``on_error="skip"`` and ``datasets verify`` treat it like any
    unreadable file) and a :class:`ValueError`. The message names the file.
    """


def decode_mask(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a nucleus mask file as binary nucleus and (when encoded) whole-cell masks.

    Three encodings are understood:

    * grey levels 0 (background), 128 (cytoplasm), 255 (nucleus), as in Zheng et al. 2018:
      nucleus is ``value > 191``, cell is ``value > 63`` (the nearest code); a mask is read in
      this code when more than :data:`MAX_OFF_CODE_SHARE` of its pixels are at 128;
    * a binary mask, 0 / 255 (nucleus is ``value > 191``) or 0 / 1: no cell mask;
    * the RGB colour code of ALL-IDB2 masks: nucleus cyan ``(0, 255, 255)``, cytoplasm blue
      ``(0, 0, 255)``, background white.

    Grey values within :data:`MASK_TOLERANCE` of a code count as that code (JPEG-like noise);
    up to :data:`MAX_OFF_CODE_SHARE` of the pixels may lie farther from every code (read as the
    nearest one, and logged); a mask with more, such as random noise or a soft probability
    map, is refused. An empty mask (all background: all 0, or an all-white colour mask) has an
    empty nucleus and an empty cell mask, whatever its encoding.

    Args:
        path: Mask file.
        size: ``(height, width)`` to resize to with nearest-neighbour sampling, or ``None``.

    Returns:
        ``(nucleus, cell)``: ``uint8`` arrays of shape ``(H, W)`` with values 0/1; ``cell`` is
        ``None`` when the mask encodes the nucleus only.

    Raises:
        ImageReadError: The file is missing or unreadable.
        MaskCodeError: Its values fit none of the encodings above (also a ``ValueError``).
    """
    p = os.fspath(path)
    img = _open(p, "a mask image")
    try:
        with img:
            img.load()
            if img.mode in {"RGB", "RGBA", "P"}:
                rgb = np.asarray(img.convert("RGB")).astype(np.int16)
                if np.ptp(rgb, axis=2).max(initial=0) > 0:
                    nucleus, cell = _decode_colour_mask(rgb, p)
                elif rgb.min(initial=255) >= 255 - MASK_TOLERANCE:  # ALL-IDB background only
                    nucleus = np.zeros(rgb.shape[:2], np.uint8)
                    cell = nucleus.copy()
                else:
                    nucleus, cell = _decode_grey_mask(rgb[:, :, 0], p)
            else:
                nucleus, cell = _decode_grey_mask(_grey_levels(img, p), p)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{p}: cannot be decoded as a mask image ({err})") from err
    if size is not None:
        nucleus = resize_mask(nucleus, size)
        cell = None if cell is None else resize_mask(cell, size)
    return nucleus, cell


def _grey_levels(img: Image.Image, path: str) -> np.ndarray:
    """A grey mask's values as ``int16``: 0-255, or 0 / 1 as stored (also at 16 or 32 bit)."""
    if img.mode not in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        return _to_uint8_rgb(img, path)[:, :, 0].astype(np.int16)
    arr = np.asarray(img).astype(np.float64)
    if not np.isfinite(arr).all():
        raise MaskCodeError(f"{path}: the mask holds NaN or infinite values; expected mask codes")
    hi = float(arr.max(initial=0.0))
    if hi <= 1.0 and not np.isin(arr, (0.0, 1.0)).all():
        arr = arr * 255.0  # a soft map in [0, 1]: refused below unless it is nearly binary
    elif hi > 255.0:
        arr = arr / 257.0  # 16-bit levels (65535 is 255)
    return np.clip(np.rint(arr), 0, 255).astype(np.int16)


def _decode_grey_mask(grey: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Nucleus and cell of a grey mask in one of the codes of :func:`decode_mask`."""
    if grey.max(initial=0) <= 1:  # 0 / 1, or empty
        nucleus = (grey == 1).astype(np.uint8)
        return nucleus, (None if nucleus.any() else nucleus.copy())
    size = grey.size
    near_cytoplasm = int((np.abs(grey - MASK_LEVELS[1]) <= MASK_TOLERANCE).sum())
    three_level = near_cytoplasm > MAX_OFF_CODE_SHARE * size
    dist = np.minimum(grey, MASK_LEVELS[2] - grey)
    if three_level:
        dist = np.minimum(dist, np.abs(grey - MASK_LEVELS[1]))
    off = int(np.count_nonzero(dist))
    far = int(np.count_nonzero(dist > MASK_TOLERANCE))
    if far > MAX_OFF_CODE_SHARE * size:
        values, counts = np.unique(grey, return_counts=True)
        common = values[np.argsort(-counts)][:8].tolist()
        raise MaskCodeError(
            f"{path}: {far / size:.1%} of the mask's pixels lie more than {MASK_TOLERANCE} grey "
            f"levels from every code (its most common values: {common}); expected 0 "
            "(background), 128 (cytoplasm), 255 (nucleus), or a binary 0/255 or 0/1 mask, with "
            f"at most {MAX_OFF_CODE_SHARE:.0%} of the pixels off-code (not noise or a soft map)"
        )
    if off:
        level = logging.WARNING if far > WARN_OFF_CODE_SHARE * size else logging.DEBUG
        _log.log(
            level, "%s: %d mask pixels (%.3f%%) are not exactly a code, %d (%.3f%%) of them "
            "more than %d grey levels off; read as the nearest code", path, off,
            100 * off / size, far, 100 * far / size, MASK_TOLERANCE,
        )  # fmt: skip
    nucleus = (grey > 191).astype(np.uint8)
    if three_level:
        return nucleus, (grey > 63).astype(np.uint8)
    return nucleus, (None if nucleus.any() else nucleus.copy())


def _decode_colour_mask(rgb: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    nucleus = (r < 128) & (g >= 128) & (b >= 128)
    cytoplasm = (r < 128) & (g < 128) & (b >= 128)
    background = (r >= 128) & (g >= 128) & (b >= 128)
    unknown = ~(nucleus | cytoplasm | background)
    if unknown.mean() > 0.05:
        raise MaskCodeError(
            f"{path}: {unknown.mean():.0%} of the mask's pixels are neither nucleus cyan "
            "(0,255,255), cytoplasm blue (0,0,255) nor background white; expected the ALL-IDB "
            "colour code or a grey-level mask"
        )
    return nucleus.astype(np.uint8), (nucleus | cytoplasm).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``uint8`` mask ``(H, W)`` to ``(height, width)`` with nearest-neighbour sampling.

    Args:
        mask: Mask array (values are kept, never blended).
        size: ``(height, width)``.

    Returns:
        A writable, C-contiguous array (``mask`` itself when it already has that size).
    """
    if mask.shape == size:
        return mask
    img = Image.fromarray(mask)
    return _writable(np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)))
