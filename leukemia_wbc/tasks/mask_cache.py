"""Segmenter masks kept per sample while a task trains: segment each cell once, not per epoch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write_bytes, atomic_write_text, json_safe
from ..models.segmenter import segmenter_state

__all__ = ["MaskCache", "segmenter_fingerprint"]

_log = logging.getLogger(__name__)

#: Bumped when the files' format or what a segmenter method computes changes.
_FORMAT = 1
#: The description file of a cache folder.
_DESCRIPTION = "segmenter.json"


def segmenter_fingerprint(module: nn.Module | None) -> tuple[str, dict[str, Any]] | None:
    """A name for what a segmenter computes: its kind, arguments and weights, hashed.

    Two segmenters with one fingerprint give the same masks: a classical method with the same
    arguments, or a network of the same architecture and weights (the SHA-256 of every tensor of
    its state dict). The library's version is part of it, so that an upgrade that changes a
    method never reads masks of the old one.

    Args:
        module: The segmenter.

    Returns:
        ``(hex digest, description)``, or ``None`` for a module the library cannot describe
        (a user's own class): its masks are then kept in memory only.
    """
    state = segmenter_state(module)
    if state is None:
        return None
    from .. import __version__

    description: dict[str, Any] = {
        "format": _FORMAT,
        "library": __version__,
        "kind": state["kind"],
        # where a network's weights were read from does not change its masks
        "init": json_safe({k: v for k, v in state["init"].items() if k != "source"}),
    }
    weights = state.get("state_dict") or {}
    if weights:
        hashed = hashlib.sha256()
        for name in sorted(weights):
            tensor = weights[name].detach().to("cpu").contiguous()
            hashed.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
            hashed.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        description["weights_sha256"] = hashed.hexdigest()
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    return digest.hexdigest(), description


def _file_key(path: str, h: int, w: int) -> str | None:
    """The name of a sample's mask file: its file's path, size and time, and the image size.

    ``None`` when ``path`` is not a file (a synthetic sample): nothing on disk says that its
    image stays the same, so its mask is kept in memory only.
    """
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    text = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{h}x{w}"
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


class MaskCache:
    """Binary masks by sample path and image size, bit-packed, in memory and on disk.

    Workers only decode and resize, so one path at one size is always the same image and its
    segmenter mask is the same: a training run segments each cell once instead of once per
    epoch (and per validation pass). A 224 px mask takes 6.3 kB.

    Once :meth:`attach` gives it a folder and a segmenter's fingerprint, every mask is also
    written there, one file per image file and size, under a subfolder named by the
    fingerprint: later folds and runs read them instead of segmenting again, and another
    segmenter (or size, or a changed image file) never reads them. A file of the wrong length
    is segmented again and rewritten. Files hold packed bits only, read as bytes: nothing in
    them is executed.

    Args:
        max_entries: Masks kept in memory at most; beyond it, masks are still written to disk.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = int(max_entries)
        self._masks: dict[tuple[str, int, int], np.ndarray] = {}
        #: The folder of this segmenter's mask files (``None``: memory only).
        self.folder: Path | None = None
        #: The physical scale of the images the masks are for (see :meth:`attach`).
        self.pixels_per_um: float | None = None
        #: Masks read from disk, segmented, and found damaged since the cache was made.
        self.counts = {"disk": 0, "segmented": 0, "damaged": 0}

    def __len__(self) -> int:
        return len(self._masks)

    def clear(self) -> None:
        """Forget every mask in memory and detach from the disk (a new segmenter)."""
        self._masks.clear()
        self.folder = None

    def attach(
        self,
        directory: str | os.PathLike[str],
        segmenter: nn.Module | None,
        *,
        pixels_per_um: float | None = None,
    ) -> Path | None:
        """Keep this segmenter's masks under ``directory`` too (created if needed).

        Args:
            directory: The cache folder (shared by segmenters: each has its subfolder).
            segmenter: The segmenter whose masks this cache holds.
            pixels_per_um: The physical scale the images are resampled to (``None``: none):
                one image file at one size is another image at another scale, so each scale
                has its own subfolder, and the masks in memory are forgotten when it changes.

        Returns:
            The segmenter's subfolder, or ``None`` when it has no fingerprint (memory only).

        Raises:
            ValueError: ``directory`` exists and is not a folder.
        """
        if pixels_per_um != self.pixels_per_um:
            self._masks.clear()
            self.pixels_per_um = pixels_per_um
        found = segmenter_fingerprint(segmenter)
        if found is None:
            self.folder = None
            return None
        digest, description = found
        if pixels_per_um is not None:
            description = {**description, "pixels_per_um": pixels_per_um}
            digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        root = Path(directory)
        if root.exists() and not root.is_dir():
            raise ValueError(f"mask_cache: {root} exists and is not a folder")
        folder = root / digest[:20]
        described = folder / _DESCRIPTION
        if not described.is_file():
            atomic_write_text(described, json.dumps(description, indent=1, sort_keys=True) + "\n")
        self.folder = folder
        return folder

    def _file(self, key: tuple[str, int, int]) -> Path | None:
        if self.folder is None:
            return None
        name = _file_key(*key)
        return None if name is None else self.folder / name[:2] / f"{name}.bits"

    def _read(self, file: Path | None, key: tuple[str, int, int]) -> np.ndarray | None:
        if file is None:
            return None
        try:
            data = file.read_bytes()
        except OSError:
            return None
        if len(data) != -(-key[1] * key[2] // 8):
            self.counts["damaged"] += 1
            _log.warning("mask cache: %s has the wrong length; segmenting that image again", file)
            return None
        self.counts["disk"] += 1
        return np.frombuffer(data, dtype=np.uint8)

    def _keep(self, key: tuple[str, int, int], bits: np.ndarray) -> None:
        if len(self._masks) < self.max_entries:
            self._masks[key] = bits

    def missing(self, paths: Sequence[str], size: tuple[int, int]) -> list[int]:
        """Which samples have no mask yet, in memory or on disk (nothing is decoded).

        Args:
            paths: Sample paths.
            size: The image size ``(H, W)`` the masks are for.

        Returns:
            The positions in ``paths`` of the samples to segment.
        """
        h, w = size
        out = []
        for i, path in enumerate(paths):
            key = (str(path), int(h), int(w))
            if key in self._masks:
                continue
            file = self._file(key)
            if file is None or not file.is_file():
                out.append(i)
        return out

    def masks(
        self, paths: Sequence[str], image: Tensor, segment: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The masks of a batch, segmenting only the images not seen before.

        Args:
            paths: One path per image.
            image: uint8 ``(B, 3, H, W)``.
            segment: Images (uint8 ``(N, 3, H, W)``) to uint8 masks ``(N, 1, H, W)``.

        Returns:
            uint8 ``(B, 1, H, W)`` masks on the images' device.
        """
        h, w = int(image.shape[-2]), int(image.shape[-1])
        keys = [(str(p), h, w) for p in paths]
        known: dict[int, np.ndarray] = {}
        files: dict[int, Path | None] = {}
        for i, key in enumerate(keys):
            bits = self._masks.get(key)
            if bits is None:
                files[i] = self._file(key)
                bits = self._read(files[i], key)
                if bits is not None:
                    self._keep(key, bits)
            if bits is not None:
                known[i] = bits
        out = torch.empty(len(keys), 1, h, w, dtype=torch.uint8, device=image.device)
        if known:  # unpacked as one array, moved to the device at once
            order = list(known)
            unpacked = np.unpackbits(np.stack([known[i] for i in order]), axis=1, count=h * w)
            where = torch.tensor(order, device=image.device)
            out[where] = torch.from_numpy(unpacked.reshape(-1, 1, h, w)).to(image.device)
        missing = [i for i in range(len(keys)) if i not in known]
        if missing:
            where = torch.tensor(missing, device=image.device)
            new = segment(image[where])
            out[where] = new.to(torch.uint8)
            self.counts["segmented"] += len(missing)
            flat = new.detach().to("cpu", torch.bool).numpy().reshape(len(missing), -1)
            for bits, i in zip(np.packbits(flat, axis=1), missing, strict=True):
                self._keep(keys[i], bits)
                file = files[i]
                if file is not None:
                    atomic_write_bytes(file, bits.tobytes())
        return out
