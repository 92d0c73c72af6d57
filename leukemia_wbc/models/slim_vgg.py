"""``vgg11_bn_quarter``: a VGG-11 (with batch norm) at a quarter of the width, for CPU runs.

The paper's VGG-16 baseline costs about 15 GMAC per 224 px image; even VGG-11 at 64 px
(about 0.7 GMAC per image with its 4096-wide pre-logits) trains too slowly for a 10-minute CPU
demonstration. This network keeps what defines the family (plain 3x3 convolution stacks
separated by max pooling, no residual connections, a convolutional MLP before the
classifier) at channel widths 16-128 and a 1024-wide hidden layer. It is registered in timm's
model registry when :mod:`leukemia_wbc.models` is imported, so it is used by name like any timm
model: ``CellClassifier("vgg11_bn_quarter")``. There are no pretrained weights for it.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, register_model
from timm.models.vgg import VGG
from torch import nn

__all__ = ["QUARTER_VGG11_CFG", "vgg11_bn_quarter"]

#: VGG-11 configuration "A" (Simonyan & Zisserman, 2015) with every width divided by four.
QUARTER_VGG11_CFG: list[int | str] = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]


@register_model  # type: ignore[untyped-decorator,unused-ignore]
def vgg11_bn_quarter(pretrained: bool = False, **kwargs: Any) -> VGG:
    """VGG-11 with batch norm at a quarter width (see the module docstring).

    Args:
        pretrained: Must be ``False``: there are no published weights for this network.
        **kwargs: timm model arguments (``num_classes``, ``in_chans``, ``drop_rate``, ...).

    Returns:
        The network (timm's :class:`~timm.models.vgg.VGG`).

    Raises:
        ValueError: ``pretrained=True``.
    """
    if pretrained:
        raise ValueError("vgg11_bn_quarter has no pretrained weights; use weights=None")
    kwargs.setdefault("mlp_ratio", 0.25)
    pretrained_cfg = kwargs.pop("pretrained_cfg", None) or {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
    }  # fmt: skip
    model: VGG = build_model_with_cfg(
        VGG, "vgg11_bn_quarter", False, model_cfg=QUARTER_VGG11_CFG,
        pretrained_cfg=pretrained_cfg,
        feature_cfg={"flatten_sequential": True, "out_indices": (0, 1, 2, 3, 4, 5)},
        norm_layer=nn.BatchNorm2d, **kwargs,
    )  # fmt: skip
    return model
