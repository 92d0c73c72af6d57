"""Kornia augmentation applied to a batch dict, keeping masks aligned with the image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
from kornia.augmentation import random_generator as rg
from torch import Tensor, nn

from .macenko import compose, estimate_stains

__all__ = ["MASK_KEYS", "MaskedAugmentation", "StainAugment", "paper_augmentation"]

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


class StainAugment(K.IntensityAugmentationBase2D):
    """Random perturbation of the hematoxylin and eosin concentrations of each image.

    In the manner of staintools' ``StainAugmentor``: each image's Macenko stain vectors and
    concentrations are estimated (batched, see
    :func:`~leukemia_wbc.transforms.macenko.estimate_stains`), every stain's concentration ``C``
    becomes ``C * a + b`` with ``a`` uniform in ``[1 - sigma_alpha, 1 + sigma_alpha]`` and
    ``b`` uniform in ``[-sigma_beta, sigma_beta]`` (drawn per image and stain), and the image
    is recomposed with its own stain vectors. Background pixels and images without enough
    tissue are left as they are. A Kornia intensity augmentation: it runs inside
    ``AugmentationSequential`` and leaves masks untouched.

    Args:
        sigma_alpha: Half-width of the multiplicative range.
        sigma_beta: Half-width of the additive range (OD units).
        p: Probability of augmenting each image.
        same_on_batch: Draw one perturbation for the whole batch.
        io: Transmitted light intensity ``Io`` of the estimate.

    Raises:
        ValueError: Negative ``sigma_alpha`` / ``sigma_beta`` or ``sigma_alpha >= 1``.
    """

    def __init__(
        self,
        sigma_alpha: float = 0.2,
        sigma_beta: float = 0.2,
        *,
        p: float = 0.5,
        same_on_batch: bool = False,
        io: float = 240.0,
    ) -> None:
        if not 0 <= sigma_alpha < 1 or sigma_beta < 0:
            raise ValueError(
                f"sigma_alpha must lie in [0, 1) and sigma_beta be >= 0, got {sigma_alpha}, "
                f"{sigma_beta}"
            )
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.io = float(io)
        scale = (1.0 - sigma_alpha, 1.0 + sigma_alpha)
        shift = (-sigma_beta, sigma_beta)
        self._param_generator = rg.PlainUniformGenerator(
            (scale, "alpha_h", None, None),
            (scale, "alpha_e", None, None),
            (shift, "beta_h", None, None),
            (shift, "beta_e", None, None),
        )

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Perturb the stain concentrations of a float batch in ``[0, 1]``.

        Args:
            input: ``(B, 3, H, W)`` float images in ``[0, 1]``.
            params: The drawn ``alpha_h``, ``alpha_e``, ``beta_h``, ``beta_e`` (one per image).
            flags: Unused.
            transform: Unused.

        Returns:
            The augmented batch, float in ``[0, 1]``.
        """
        x = input.clamp(0.0, 1.0)
        est = estimate_stains(x, io=self.io)
        dev, dt = input.device, est.concentrations.dtype
        alpha = torch.stack([params["alpha_h"], params["alpha_e"]], dim=1).to(dev, dt)
        beta = torch.stack([params["beta_h"], params["beta_e"]], dim=1).to(dev, dt)
        conc = est.concentrations * alpha.unsqueeze(2) + beta.unsqueeze(2)
        est = est._replace(concentrations=conc)
        return compose(x, est, est.stains, self.io, keep_background=True)


def paper_augmentation(
    *,
    degrees: float = 180.0,
    translate: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    contrast: float = 0.2,
    brightness: float = 0.1,
    stain: StainAugment | float | None = None,
) -> MaskedAugmentation:
    """The paper's augmentation: rotation, flips, zoom, shift, contrast and brightness.

    Args:
        degrees: Maximum rotation angle (cells have no preferred orientation: default 180).
        translate: Maximum shift as a fraction of the image size.
        zoom: Range of the scale factor.
        contrast: Contrast jitter strength (0 turns it off).
        brightness: Brightness jitter strength (0 turns it off).
        stain: Optional stain augmentation: a :class:`StainAugment`, or a number used as both
            its ``sigma_alpha`` and ``sigma_beta``.

    Returns:
        A :class:`MaskedAugmentation` for training batches (image float in ``[0, 1]``).
    """
    steps: list[nn.Module] = []
    if stain is not None:
        steps.append(stain if isinstance(stain, StainAugment) else StainAugment(stain, stain))
    steps += [
        K.RandomRotation(degrees=degrees, p=1.0),
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomAffine(degrees=0.0, translate=(translate, translate), scale=zoom, p=0.5),
    ]
    if contrast > 0 or brightness > 0:
        steps.append(K.ColorJitter(brightness=brightness, contrast=contrast, p=0.5))
    return MaskedAugmentation(*steps)
