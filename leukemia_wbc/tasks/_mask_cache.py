"""Segmenter masks kept per sample while a task trains: segment each cell once, not per epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["MaskCache"]


class MaskCache:
    """Binary masks by sample path and image size, bit-packed on the CPU.

    Workers only decode and resize, so one path at one size is always the same image and its
    segmenter mask is the same: a training run segments each cell once instead of once per
    epoch (and per validation pass). A 224 px mask takes 6.3 kB.

    Args:
        max_entries: Masks kept at most; beyond it, new masks are computed but not kept.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = int(max_entries)
        self._masks: dict[tuple[str, int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._masks)

    def clear(self) -> None:
        """Forget every mask (a new segmenter)."""
        self._masks.clear()

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
        keys = [(p, h, w) for p in paths]
        missing = [i for i, k in enumerate(keys) if k not in self._masks]
        fresh: dict[int, Tensor] = {}
        if missing:
            new = segment(image[torch.tensor(missing, device=image.device)])
            for j, i in enumerate(missing):
                fresh[i] = new[j]
                if len(self._masks) < self.max_entries:
                    bits = new[j].detach().to("cpu", torch.bool).numpy().ravel()
                    self._masks[keys[i]] = np.packbits(bits)
        out = [
            fresh[i]
            if i in fresh
            else torch.from_numpy(np.unpackbits(self._masks[k], count=h * w).reshape(1, h, w))
            for i, k in enumerate(keys)
        ]
        return torch.stack([m.to(image.device, torch.uint8) for m in out])
