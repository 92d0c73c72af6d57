"""Captum attributions for the one- and two-branch classifiers, and where they fall.

:class:`Explainer` computes, for a normalised batch, one non-negative map per branch of the
task (:meth:`~leukemia_wbc.tasks.ClassificationTask.branches`) at the image's resolution:
Grad-CAM (``LayerGradCam`` on the branch's last convolutional stage) or Integrated Gradients
(absolute values summed over channels). Each branch is explained as a single-input model while
the task's other inputs are held fixed; a map of a branch that reads the nucleus crop is pasted
back at the crop's box in the full image. :func:`attribution_share` measures the share of a map's
mass inside the nucleus mask, to test the paper's claim that the network looks at the nucleus
against the nucleus's share of the image area.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import Tensor, nn

from .tasks.branches import BranchInput
from .tasks.classifier_base import ClassificationTask

__all__ = [
    "Attribution",
    "AttributionMethod",
    "Explainer",
    "NucleusFocus",
    "attribution_share",
    "last_conv_layer",
    "nucleus_focus",
    "overlay",
]

#: Attribution methods of :class:`Explainer`.
AttributionMethod = Literal["gradcam", "integrated_gradients"]


def last_conv_layer(backbone: nn.Module) -> nn.Module:
    """The last convolutional stage of a timm backbone (Grad-CAM's layer).

    Uses timm's ``feature_info`` (the deepest feature stage, e.g. ``layer4`` of a ResNet or
    the last block of a MobileNetV2); without it, the last ``Conv2d`` module.

    Args:
        backbone: The backbone.

    Returns:
        The layer module.

    Raises:
        ValueError: The backbone has neither ``feature_info`` nor a ``Conv2d``.
    """
    info = getattr(backbone, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and "module" in info[-1]:
        return backbone.get_submodule(str(info[-1]["module"]))
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(backbone).__name__} has no feature_info and no Conv2d layer")
    return convs[-1]


@dataclass
class Attribution:
    """Attribution maps of a batch.

    Attributes:
        maps: Branch name (``"cell"``, and ``"nucleus"`` for two-branch models) to
            ``(B, 1, H, W)`` non-negative maps at the image's resolution.
        target: ``(B,)`` class each map explains.
        probs: ``(B, C)`` predicted class probabilities.
        method: The method used.
    """

    maps: dict[str, Tensor]
    target: Tensor
    probs: Tensor
    method: AttributionMethod


def _paste(maps: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Place crop-sized maps ``(B, 1, s, s)`` back at their boxes in ``(B, 1, H, W)`` images."""
    out = maps.new_zeros(maps.shape[0], 1, *size)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        h, w = y1 - y0 + 1, x1 - x0 + 1
        resized = F.interpolate(maps[i : i + 1], size=(h, w), mode="bilinear", align_corners=True)
        out[i, :, y0 : y1 + 1, x0 : x1 + 1] = resized[0]
    return out


class Explainer:
    """Grad-CAM or Integrated Gradients maps of a classifier, one per branch.

    The branches are the task's :meth:`~leukemia_wbc.tasks.ClassificationTask.branches`: the
    backbone of a :class:`~leukemia_wbc.tasks.CellClassifier`, the cell and nucleus backbones of
    a :class:`~leukemia_wbc.tasks.DualBranchClassifier`, the whole ``net`` of a subclass that
    builds its own network, or whatever a subclass's ``branches()`` names. The task's
    ``forward`` takes the branches' inputs in that order.

    Args:
        task: A trained classification task.
        method: ``"gradcam"`` or ``"integrated_gradients"``.
        n_steps: Integration steps of Integrated Gradients.
        layers: Grad-CAM layer per branch, overriding :func:`last_conv_layer`.

    Raises:
        ValueError: An unknown method, a task without branches (see ``branches()``), or a
            branch without a convolutional layer for Grad-CAM.
    """

    def __init__(
        self,
        task: ClassificationTask,
        method: AttributionMethod = "gradcam",
        *,
        n_steps: int = 32,
        layers: dict[str, nn.Module] | None = None,
    ) -> None:
        if method not in ("gradcam", "integrated_gradients"):
            raise ValueError(f"method must be 'gradcam' or 'integrated_gradients', got {method!r}")
        found = task.branches()
        if not found:
            raise ValueError(f"{type(task).__name__}.branches() names no branch to explain")
        #: Branch name to its input (``"image"`` or ``"nucleus"``), in ``forward``'s order.
        self.inputs: dict[str, BranchInput] = {k: b.input for k, b in found.items()}
        #: Branch name to the module explained.
        self.branches: dict[str, nn.Module] = {k: b.module for k, b in found.items()}
        self.task = task
        self.method: AttributionMethod = method
        self.n_steps = n_steps
        self.layers = {
            k: (layers or {}).get(k) or last_conv_layer(b) for k, b in self.branches.items()
        }

    def _attribute(
        self, fn: Callable[..., Tensor], branch: str, inputs: Tensor, target: Tensor,
        fixed: tuple[Tensor, ...],
    ) -> Tensor:  # fmt: skip
        """One branch's map ``(B, 1, h, w)`` at the resolution of ``inputs``.

        ``fixed`` are the other branches' inputs, held constant: Captum passes them as
        additional forward arguments (repeated along the integration path of Integrated
        Gradients).
        """
        extra = fixed or None
        if self.method == "gradcam":
            cam = LayerGradCam(fn, self.layers[branch])
            raw = cam.attribute(
                inputs, target=target, additional_forward_args=extra, relu_attributions=True
            )
            up: Tensor = LayerAttribution.interpolate(raw, tuple(inputs.shape[2:]), "bilinear")
            return up.detach().clamp_min(0.0)
        ig = IntegratedGradients(fn)
        # One integration step of the whole batch at a time: the memory of one ordinary batch
        # (Captum's default expands the batch n_steps-fold at once: 24 GB for 128 cells).
        raw = ig.attribute(
            inputs,
            baselines=torch.zeros_like(inputs),
            target=target,
            additional_forward_args=extra,
            n_steps=self.n_steps,
            internal_batch_size=int(inputs.shape[0]),
        )
        summed: Tensor = raw.detach().abs().sum(dim=1, keepdim=True)
        return summed

    def explain(
        self, batch: dict[str, Any], target: Tensor | Sequence[int] | None = None
    ) -> Attribution:
        """Attribution maps of a batch after the device stage.

        Args:
            batch: Batch dict with a normalised ``image`` (and ``mask`` for tasks that read the
                nucleus, unless the task has a segmenter).
            target: Class to explain per sample; default the predicted class.

        Returns:
            The :class:`Attribution`.
        """
        task = self.task
        was_training = task.training
        task.eval()
        image: Tensor = batch["image"]
        try:
            with torch.no_grad():
                logits = task.forward_batch(batch)
            probs = logits.softmax(dim=1)
            tgt = probs.argmax(dim=1) if target is None else torch.as_tensor(target).long()
            tgt = tgt.to(image.device)
            with torch.enable_grad():
                maps = self._maps(batch, tgt)
        finally:
            task.train(was_training)
        return Attribution(
            maps={k: v.cpu() for k, v in maps.items()},
            target=tgt.cpu(),
            probs=probs.cpu(),
            method=self.method,
        )

    def _maps(self, batch: dict[str, Any], target: Tensor) -> dict[str, Tensor]:
        task = self.task
        image: Tensor = batch["image"]
        size = (int(image.shape[2]), int(image.shape[3]))
        boxes: Tensor | None = None
        args: list[Tensor] = []  # the inputs of task.forward, in the branches' order
        for kind in self.inputs.values():
            if kind == "image":
                args.append(image.detach())
                continue
            if boxes is None:
                crops = task.nucleus_crops(batch)
                boxes, nucleus = crops.boxes, crops.crops.detach()
            args.append(nucleus)
        extra = tuple(t.detach() for t in task.extra_inputs(batch))  # held as they are
        maps: dict[str, Tensor] = {}
        for i, (name, kind) in enumerate(self.inputs.items()):
            held = tuple(a for j, a in enumerate(args) if j != i) + extra

            def forward(x: Tensor, *rest: Tensor, at: int = i) -> Tensor:
                inputs = list(rest)
                inputs.insert(at, x)
                return task.forward(*inputs)

            found = self._attribute(forward, name, args[i], target, held)
            maps[name] = found if boxes is None or kind == "image" else _paste(found, boxes, size)
        return maps


def attribution_share(maps: Tensor, mask: Tensor) -> Tensor:
    """Share of each map's mass inside its mask.

    Args:
        maps: ``(B, 1, H, W)`` non-negative maps.
        mask: ``(B, 1, H, W)`` masks (nonzero inside).

    Returns:
        ``(B,)`` shares in ``[0, 1]`` (``NaN`` for an all-zero map).

    Raises:
        ValueError: Shapes that differ.
    """
    if maps.shape != mask.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and mask {tuple(mask.shape)} differ in shape")
    m = maps.double().clamp_min(0.0)
    total = m.sum(dim=(1, 2, 3))
    inside = (m * (mask > 0)).sum(dim=(1, 2, 3))
    share = inside / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan"))).float()


@dataclass
class NucleusFocus:
    """Attribution mass inside the nucleus against the nucleus's share of the image, per class.

    Attributes:
        classes: Class names (rows).
        share: Mean share of the attribution mass inside the nucleus, per class.
        area: Mean share of the image area the nucleus covers, per class.
        count: Cells per class.
        branch: The branch the maps come from.
    """

    classes: tuple[str, ...]
    share: np.ndarray
    area: np.ndarray
    count: np.ndarray
    branch: str

    def to_markdown(self, digits: int = 3) -> str:
        """A table: class | cells | attribution inside nucleus | nucleus area | ratio."""
        lines = [
            f"| class | cells | {self.branch} attribution in nucleus | nucleus area | ratio |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, cls in enumerate(self.classes):
            if self.count[i] == 0:
                continue
            ratio = self.share[i] / self.area[i] if self.area[i] > 0 else float("nan")
            lines.append(
                f"| {cls} | {int(self.count[i])} | {self.share[i]:.{digits}f} | "
                f"{self.area[i]:.{digits}f} | {ratio:.2f} |"
            )
        return "\n".join(lines) + "\n"


def nucleus_focus(
    maps: Tensor,
    mask: Tensor,
    labels: Tensor | Sequence[int],
    classes: Sequence[str],
    *,
    branch: str = "cell",
) -> NucleusFocus:
    """Per-class mean of :func:`attribution_share` and of the nucleus's area share.

    Args:
        maps: ``(B, 1, H, W)`` maps.
        mask: ``(B, 1, H, W)`` nucleus masks.
        labels: ``(B,)`` classes to group by (true or predicted).
        classes: Class names.
        branch: Name of the branch the maps come from (for the table).

    Returns:
        The :class:`NucleusFocus`.
    """
    share = attribution_share(maps, mask).numpy()
    area = (mask > 0).float().mean(dim=(1, 2, 3)).numpy()
    y = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    n = len(classes)
    out = np.full((2, n), np.nan)
    count = np.bincount(y, minlength=n)
    for c in range(n):
        rows = (y == c) & ~np.isnan(share)
        if rows.any():
            out[0, c], out[1, c] = share[rows].mean(), area[rows].mean()
    return NucleusFocus(tuple(classes), out[0], out[1], count, branch)


def overlay(
    image: Tensor | np.ndarray, heat: Tensor | np.ndarray, *, alpha: float = 0.45
) -> np.ndarray:
    """Blend a map (scaled to its own maximum, jet colours) over an RGB image.

    Args:
        image: ``(3, H, W)`` ``uint8`` (or float in ``[0, 1]``) image, or ``(H, W, 3)``.
        heat: ``(H, W)`` or ``(1, H, W)`` non-negative map.
        alpha: Weight of the map.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB overlay.
    """
    import matplotlib

    img = np.asarray(image.cpu() if isinstance(image, Tensor) else image)
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    rgb = img.astype(np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    h = np.asarray(heat.cpu() if isinstance(heat, Tensor) else heat, dtype=np.float64)
    h = h.reshape(h.shape[-2:])
    peak = h.max()
    h = h / peak if peak > 0 else h
    colour = matplotlib.colormaps["jet"](h)[..., :3]
    out = (1 - alpha * h[..., None]) * rgb + alpha * h[..., None] * colour
    return np.asarray(np.clip(out * 255.0 + 0.5, 0, 255), dtype=np.uint8)
