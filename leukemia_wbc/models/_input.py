"""Checks of what a backbone can take (private)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["check_images"]


def check_images(image: object, backbone: nn.Module, name: str, in_chans: int) -> Tensor:
    """Validate a float batch for a timm backbone, with a message naming the backbone.

    Args:
        image: The input to check.
        backbone: The timm backbone that will receive it.
        name: What the input is for (``"resnet50 (cell branch)"``), for the message.
        in_chans: Channels the backbone was built for.

    Returns:
        ``image``.

    Raises:
        TypeError: Not a floating-point tensor.
        ValueError: Wrong rank or channel count, or an image smaller than the backbone's
            total stride (or, for a fixed-size model such as a ViT, not its size).
    """
    if not isinstance(image, Tensor) or not image.is_floating_point():
        kind = image.dtype if isinstance(image, Tensor) else type(image).__name__
        raise TypeError(f"{name}: expected a float tensor (B, {in_chans}, H, W), got {kind}")
    if image.ndim != 4 or image.shape[1] != in_chans:
        raise ValueError(
            f"{name}: expected images of shape (B, {in_chans}, H, W), got {tuple(image.shape)}"
        )
    h, w = image.shape[2:]
    patch = getattr(backbone, "patch_embed", None)
    fixed = getattr(patch, "img_size", None)
    if fixed is not None and getattr(patch, "strict_img_size", False) and (h, w) != tuple(fixed):
        raise ValueError(f"{name}: takes {tuple(fixed)} images only, got {(h, w)}")
    info = getattr(backbone, "feature_info", None)
    stride = 1
    if isinstance(info, list) and info and isinstance(info[-1], dict):
        stride = int(info[-1].get("reduction", 1))
    if h < stride or w < stride:
        raise ValueError(
            f"{name}: images must be at least {stride}x{stride} (its total stride), got {h}x{w}"
        )
    return image
