"""``SmearAnalyzer``: whole smear in; cells, classes, counts and the blast percentage out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from ..data.base import read_rgb
from ..inference import TrainedModel
from ..tasks.classifier_base import ClassificationTask
from ..transforms.pipeline import DevicePipeline
from .detections import Detections, to_unit_image
from .detectors import CellDetector
from .result import SmearAnalysis

__all__ = ["DEFAULT_BLAST_CLASSES", "SmearAnalyzer"]

#: Class names counted as blasts when ``blast_classes`` is not given: the library's synthetic
#: classes ALL and AML (lymphoblasts, myeloblasts) and ALL-IDB's "blast".
DEFAULT_BLAST_CLASSES: tuple[str, ...] = ("ALL", "AML", "blast", "lymphoblast", "myeloblast")


def _side(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class SmearAnalyzer:
    """Detect the white cells of a smear, classify each, and count blasts.

    For each detection the analyzer cuts a square crop around the cell box (widened by
    ``margin`` on each side and shifted inside the image at its borders), resizes it to the
    classifier's input size with the detection's nucleus mask, runs the classifier's
    evaluation pipeline and takes the class probabilities. A
    :class:`~leukemia_wbc.tasks.DualBranchClassifier` gets the detector's nucleus mask as the
    batch's ``mask``, so its nucleus branch sees the detected nucleus.

    Args:
        detector: Finds the white cells (Mask R-CNN, classical or hybrid).
        classifier: A :class:`~leukemia_wbc.inference.TrainedModel` (e.g.
            ``TrainedModel.from_checkpoint("model.ckpt")``), whose pipeline and image size are
            used; a bare task is accepted with a warning and applied with ``pipeline``.
        pipeline: For a bare task only: its evaluation pipeline (default channel
            normalisation with ImageNet statistics).
        size: For a bare task only: its input side (default 224).
        blast_classes: Class names counted as blasts (default: those of
            :data:`DEFAULT_BLAST_CLASSES` among the classifier's classes).
        margin: Crop margin around the cell box on each side, as a share of its longer side.
            The default 0.35 frames the cell as :class:`~leukemia_wbc.data.SyntheticWBC` does
            (cell radius 0.42-0.68 of the half side): the crop is 1.7 times the cell.
        scale: Resize factor applied to the smear before detection (e.g. 0.5 for a
            magnification twice that of the detector's training images).
        batch_size: Crops per classifier batch.
        confidence: Level of the blast-share interval.

    Raises:
        ValueError: No blast class among the classifier's classes, or a bad number.
    """

    def __init__(
        self,
        detector: CellDetector,
        classifier: TrainedModel | ClassificationTask,
        *,
        pipeline: DevicePipeline | None = None,
        size: int | tuple[int, int] | None = None,
        blast_classes: Sequence[str] | None = None,
        margin: float = 0.35,
        scale: float = 1.0,
        batch_size: int = 64,
        confidence: float = 0.95,
    ) -> None:
        if isinstance(classifier, TrainedModel):
            if pipeline is not None or (size is not None and classifier.size != _side(size)):
                raise ValueError(
                    "SmearAnalyzer: pipeline and size come from the TrainedModel "
                    f"({classifier.size[0]}x{classifier.size[1]}); do not pass other ones"
                )
            pipeline, size, task = classifier.pipeline, classifier.size, classifier.task
        else:
            if pipeline is None:
                warnings.warn(
                    "SmearAnalyzer got a bare task: it is applied without the preprocessing it "
                    "was trained with (stain target, equalisation); pass "
                    "TrainedModel.from_checkpoint(...) instead",
                    stacklevel=2,
                )
            task = classifier
        size = 224 if size is None else size
        classes = tuple(task.classes)
        wanted = DEFAULT_BLAST_CLASSES if blast_classes is None else tuple(blast_classes)
        unknown = [c for c in wanted if c not in classes] if blast_classes is not None else []
        chosen = tuple(c for c in classes if c in wanted)
        if unknown or not chosen:
            raise ValueError(
                f"blast_classes must name classes of the classifier {classes}; got "
                f"{list(wanted)}" + ("" if blast_classes is not None else " (the default)")
            )
        side = (size, size) if isinstance(size, int) else tuple(size)
        for name, ok, expected, value in (
            ("margin", margin >= 0, ">= 0", margin),
            ("scale", scale > 0, "> 0", scale),
            ("batch_size", batch_size >= 1, ">= 1", batch_size),
            ("confidence", 0 < confidence < 1, "in (0, 1)", confidence),
            ("size", len(side) == 2 and min(side) >= 8, "at least 8 pixels a side", size),
        ):
            if not ok:
                raise ValueError(f"argument {name!r} must be {expected}, got {value!r}")
        self.detector = detector
        self.classifier = task.eval()
        self.pipeline = DevicePipeline() if pipeline is None else pipeline
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.classes = classes
        self.blast_classes = chosen
        self.margin = float(margin)
        self.scale = float(scale)
        self.batch_size = int(batch_size)
        self.confidence = float(confidence)

    @property
    def device(self) -> torch.device:
        """The classifier's device."""
        return next(self.classifier.parameters()).device

    def crops(self, image: Tensor, detections: Detections) -> tuple[Tensor, Tensor]:
        """Cell crops and nucleus-mask crops of the detections, at the classifier's size.

        Args:
            image: ``uint8`` ``(3, H, W)``.
            detections: The cells of ``image``.

        Returns:
            ``uint8`` ``(N, 3, h, w)`` crops and ``uint8`` ``(N, 1, h, w)`` 0/1 masks.
        """
        _, h, w = image.shape
        boxes = detections.boxes.float().cpu()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = (boxes[:, 2:] - boxes[:, :2]).max(1).values * (1 + 2 * self.margin)
        side = torch.minimum(side.clamp_min(2.0), torch.tensor(float(min(h, w))))
        half = side.unsqueeze(1) / 2
        low = torch.minimum(
            torch.maximum(centre - half, torch.zeros(2)), torch.tensor([w, h]) - 2 * half
        )
        rois = torch.cat([torch.zeros(len(boxes), 1), low, low + 2 * half], 1)
        rois = rois.to(image.device)
        pixels = roi_align(image.float().unsqueeze(0), rois, self.size, aligned=True)
        mask_crops = torch.zeros(len(boxes), 1, *self.size, dtype=torch.uint8, device=image.device)
        for i, (x0, y0, x1, y1) in enumerate(rois[:, 1:].tolist()):
            # only the window under the crop: no (N, H, W) float copy of full-size masks
            wx0, wy0 = max(int(x0) - 1, 0), max(int(y0) - 1, 0)
            wx1, wy1 = min(int(x1) + 2, w), min(int(y1) + 2, h)
            window = detections.masks[i, wy0:wy1, wx0:wx1].to(image.device).float()
            roi = torch.tensor([[0.0, x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0]], device=image.device)
            mask_crops[i] = roi_align(window[None, None], roi, self.size, aligned=True)[0] > 0.5
        return pixels.round().clamp(0, 255).to(torch.uint8), mask_crops

    @torch.inference_mode()
    def classify(self, crops: Tensor, masks: Tensor) -> Tensor:
        """Class probabilities ``(N, C)`` of crops with their nucleus masks.

        Args:
            crops: ``uint8`` ``(N, 3, h, w)``.
            masks: ``uint8`` ``(N, 1, h, w)``.

        Returns:
            ``float32`` probabilities on the CPU.
        """
        out = [torch.zeros(0, len(self.classes))]
        pipeline = self.pipeline.to(self.device)
        for start in range(0, len(crops), self.batch_size):
            batch = {
                "image": crops[start : start + self.batch_size].to(self.device),
                "mask": masks[start : start + self.batch_size].to(self.device),
            }
            # the detector's nucleus masks, or the classifier's own (mask_source="segmenter")
            prepare = getattr(self.classifier, "prepare_batch", None)
            batch = pipeline(prepare(batch) if callable(prepare) else batch, train=False)
            out.append(self.classifier.forward_batch(batch).float().softmax(1).cpu())
        return torch.cat(out)

    def analyze(self, image: Tensor | np.ndarray | str | os.PathLike[str]) -> SmearAnalysis:
        """Analyse one smear.

        Args:
            image: An image file, an RGB ``uint8`` array ``(H, W, 3)`` or a tensor
                ``(3, H, W)`` (uint8, or float in ``[0, 1]``).

        Returns:
            The cells, their classes, counts and the blast share.

        Raises:
            ImageReadError: The file cannot be read.
            ValueError: An array or tensor of the wrong shape.
        """
        path = None
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            image = read_rgb(path)
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image array must be (H, W, 3) RGB, got shape {image.shape}")
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        pixels = (to_unit_image(image) * 255).round().to(torch.uint8)
        if self.scale != 1.0:
            pixels = (
                F.interpolate(pixels.unsqueeze(0).float(), scale_factor=self.scale, mode="area")[0]
                .round()
                .to(torch.uint8)
            )
        detections = self.detector(pixels).to("cpu")
        crops, masks = self.crops(pixels, detections)
        probabilities = self.classify(crops, masks)
        return SmearAnalysis(
            image=pixels.permute(1, 2, 0).cpu().numpy().copy(),
            detections=detections,
            probabilities=probabilities,
            classes=self.classes,
            blast_classes=self.blast_classes,
            scale=self.scale,
            confidence=self.confidence,
            path=path,
        )

    __call__ = analyze
