"""``CellNet``: one timm backbone and the paper's head (the single-branch classifier)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._input import check_images
from .backbones import Weights, create_backbone, feature_dim
from .heads import ClassifierHead

__all__ = ["CellNet"]


class CellNet(nn.Module):
    """Whole-cell classifier: a timm backbone (no classifier) and a :class:`ClassifierHead`.

    The ResNet-50 and VGG-16 baselines of the paper are ``CellNet(backbone="resnet50")`` and
    ``CellNet(backbone="vgg16")``.

    Args:
        num_classes: Number of classes.
        backbone: Any timm model name.
        weights: ``None`` (random initialisation), ``"imagenet"`` or a local weights file (see
            :func:`~leukemia_wbc.models.backbones.create_backbone`).
        head_hidden: Widths of the head's hidden layers.
        dropout: Dropout of the head.
        in_chans: Input channels.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        weights: Weights = None,
        head_hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.backbone = create_backbone(backbone, weights=weights, in_chans=in_chans)
        self.head = ClassifierHead(
            feature_dim(self.backbone), num_classes, hidden=head_hidden, dropout=dropout
        )

    def features(self, image: Tensor) -> Tensor:
        """Pooled backbone features ``(B, D)`` of a normalised float batch.

        Raises:
            TypeError: See :func:`~leukemia_wbc.models._input.check_images`.
            ValueError: See :func:`~leukemia_wbc.models._input.check_images`.
        """
        check_images(image, self.backbone, self.backbone_name, self.in_chans)
        features: Tensor = self.backbone(image)
        return features

    def forward(self, image: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of a normalised float batch ``(B, C, H, W)``."""
        logits: Tensor = self.head(self.features(image))
        return logits
