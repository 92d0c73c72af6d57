"""Kornia augmentation applied to a batch dict, keeping masks aligned with the image."""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
from torch import Tensor, nn

__all__ = ["MASK_KEYS", "MaskedAugmentation", "paper_augmentation"]

#: Batch keys that hold masks and follow the image's geometric transforms.
MASK_KEYS: tuple[str, ...] = ("mask", "cell_mask")


class MaskedAugmentation(nn.Module):
    """Apply Kornia augmentations to ``batch["image"]`` and the same geometry to its masks.

    Photometric augmentations change the image only; geometric ones move image and masks
    together, masks with nearest-neighbour sampling so they stay binary.

    Args:
        augmentations: Kornia augmentation modules, applied in order.
        mask_keys: Batch keys treated as masks (those present are transformed).
    """

    def __init__(self, *augmentations: nn.Module, mask_keys: Sequence[str] = MASK_KEYS) -> None:
        super().__init__()
        self.augmentations = nn.ModuleList(augmentations)
        self.mask_keys = tuple(mask_keys)
        self._sequential: dict[tuple[str, ...], K.AugmentationSequential] = {}

    def _pipeline(self, keys: tuple[str, ...]) -> K.AugmentationSequential:
        if keys not in self._sequential:
            self._sequential[keys] = K.AugmentationSequential(
                *self.augmentations, data_keys=["input", *(["mask"] * len(keys))]
            )
        return self._sequential[keys]

    def forward(self, batch: dict[str, object]) -> dict[str, object]:
        """Augment a batch dict.

        Args:
            batch: ``image`` float ``(B, 3, H, W)`` in ``[0, 1]``, optional masks ``(B, 1, H, W)``.

        Returns:
            The same dict with ``image`` and the masks replaced (masks keep their dtype).

        Raises:
            TypeError: ``batch["image"]`` is not a floating-point tensor.
        """
        image = batch["image"]
        if not isinstance(image, Tensor) or not image.is_floating_point():
            raise TypeError("MaskedAugmentation expects batch['image'] as a float tensor in [0, 1]")
        keys = tuple(k for k in self.mask_keys if isinstance(batch.get(k), Tensor))
        masks = [batch[k] for k in keys]
        inputs = [image, *(m.to(image.dtype) for m in masks if isinstance(m, Tensor))]
        out = self._pipeline(keys)(*inputs)
        outputs = [out] if isinstance(out, Tensor) else list(out)
        result = dict(batch)
        result["image"] = outputs[0].clamp(0.0, 1.0)
        for key, original, new in zip(keys, masks, outputs[1:], strict=True):
            assert isinstance(original, Tensor)
            result[key] = new.round().to(original.dtype)
        return result


def paper_augmentation(
    *,
    degrees: float = 180.0,
    translate: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    contrast: float = 0.2,
) -> MaskedAugmentation:
    """The paper's augmentation: rotation, horizontal and vertical flips, zoom, shift, contrast.

    Args:
        degrees: Maximum rotation angle (cells have no preferred orientation: default 180).
        translate: Maximum shift as a fraction of the image size.
        zoom: Range of the scale factor.
        contrast: Contrast jitter strength.

    Returns:
        A :class:`MaskedAugmentation` for training batches.
    """
    return MaskedAugmentation(
        K.RandomRotation(degrees=degrees, p=1.0),
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomAffine(degrees=0.0, translate=(translate, translate), scale=zoom, p=0.5),
        K.ColorJitter(contrast=contrast, p=0.5),
    )
