"""Two random views of each cell for self-supervised pretraining, batched on the device."""

from __future__ import annotations

import kornia.augmentation as K
from torch import Tensor, nn

from .augment import StainAugment

__all__ = ["CellViews"]


class CellViews(nn.Module):
    """A random view of every image of a float batch: crop, symmetry, stain, colour, blur.

    The augmentations of SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of
    Visual Representations", ICML 2020: random resized crop, colour jitter, grayscale, blur),
    adapted to single blood cells:

    - rotations by multiples of 90 degrees and flips (a cell has no orientation, and these
      leave no empty corners that a network could tell views apart by);
    - a Macenko stain perturbation (:class:`~leukemia_wbc.transforms.StainAugment`) before the
      colour jitter, so that two views of one cell differ in the way two labs' stains differ
      and the features learned do not encode the stain.

    Each call draws new parameters for each image; call it twice on a batch for two views.

    Args:
        size: Output ``(height, width)`` of each view.
        crop_scale: Range of the cropped share of the image area.
        stain: Half-width of the multiplicative and additive stain perturbation (0 turns it off).
        colour: Strength of brightness, contrast and saturation jitter (hue jitter is a fifth
            of it; 0 turns it off).
        grayscale: Probability of a grayscale view.
        blur: Probability of a Gaussian blur (sigma 0.1-1.5 pixels).

    Raises:
        ValueError: A crop scale outside ``(0, 1]`` or decreasing, a probability outside
            ``[0, 1]``, or a negative strength.
    """

    def __init__(
        self,
        size: tuple[int, int],
        *,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        stain: float = 0.4,
        colour: float = 0.4,
        grayscale: float = 0.2,
        blur: float = 0.5,
    ) -> None:
        super().__init__()
        #: The output size of each view.
        self.size = (int(size[0]), int(size[1]))
        low, high = crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        for name, p in (("grayscale", grayscale), ("blur", blur)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        if stain < 0 or colour < 0:
            raise ValueError(f"stain and colour strengths must be >= 0, got {stain}, {colour}")
        steps: list[nn.Module] = [
            K.RandomResizedCrop(size, scale=(low, high), ratio=(0.75, 4 / 3)),
            K.RandomRotation90(times=(0, 3), p=1.0),
            K.RandomHorizontalFlip(p=0.5),
        ]
        if stain > 0:
            steps.append(StainAugment(min(stain, 0.9), stain, p=0.8))
        if colour > 0:
            steps.append(K.ColorJitter(colour, colour, colour, min(colour / 5, 0.5), p=0.8))
        if grayscale > 0:
            steps.append(K.RandomGrayscale(p=grayscale))
        if blur > 0:
            kernel = max(3, (min(size) // 16) | 1)
            steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 1.5), p=blur))
        self.steps = K.AugmentationSequential(*steps)  # type: ignore[arg-type]

    def forward(self, image: Tensor) -> Tensor:
        """One random view of each image.

        Args:
            image: ``(B, 3, H, W)`` float in ``[0, 1]``.

        Returns:
            ``(B, 3, *size)`` float in ``[0, 1]``.

        Raises:
            TypeError: ``image`` is not a floating-point tensor.
        """
        if not image.is_floating_point():
            raise TypeError(f"CellViews expects float images in [0, 1], got {image.dtype}")
        out = self.steps(image)
        assert isinstance(out, Tensor)
        return out.clamp(0.0, 1.0)
