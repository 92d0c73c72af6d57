"""The nucleus segmenter of a classifier, as configuration: a method name, a checkpoint, a module.

Classifiers that need a nucleus mask on data without masks (the dual branch, the nucleus-only
model, the handcrafted SVM) take ``segmenter`` as a *spec*:

* a classical method name (``"kmeans"``, ``"watershed"``, ... see
  :class:`~leukemia_wbc.models.ClassicalNucleusSegmenter`);
* the path of a trained ``SegmentationModule`` checkpoint (a U-Net from ``leukemia-wbc fit
  --config segmentation_unet``), rebuilt here as a :class:`NetworkSegmenter`;
* an ``nn.Module`` mapping images to ``(B, 1, H, W)`` masks.

:func:`segmenter_state` turns the segmenter into plain data plus tensors, which the classifier's
checkpoint carries, and :func:`segmenter_from_state` rebuilds it from them, by a closed set of
kinds: nothing in a file is imported or called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._safe_load import load_torch_file
from ..transforms.checks import check_batch, to_unit_float
from ..transforms.pipeline import PIPELINE_KEY
from ..transforms.registry import check_plain
from .segmentation import (
    ClassicalMethod,
    ClassicalNucleusSegmenter,
    KeepMode,
    create_segmentation_net,
    postprocess_masks,
)

__all__ = [
    "SEGMENTER_KEY",
    "NetworkSegmenter",
    "SegmenterSpec",
    "load_segmenter",
    "resolve_segmenter",
    "segmenter_from_state",
    "segmenter_state",
]

#: What a classifier's ``segmenter`` argument takes: a classical method name, the path of a
#: trained ``SegmentationModule`` checkpoint, a module, or ``None``.
SegmenterSpec = str | nn.Module | None

#: Checkpoint key of a classifier's segmenter record.
SEGMENTER_KEY = "leukemia_wbc_segmenter"

_CLASSICAL: tuple[str, ...] = get_args(ClassicalMethod)
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Constructor arguments of ``SegmentationModule`` that describe its network.
_NET_ARGS = ("arch", "encoder", "mode", "in_chans", "net_kwargs", "threshold", "centre_radius",
             "keep")  # fmt: skip
#: What a segmenter checkpoint is, for messages.
_EXPECTED = ("a checkpoint written while training SegmentationModule (leukemia-wbc fit --config "
             "segmentation_unet)")  # fmt: skip


class NetworkSegmenter(nn.Module):
    """A trained nucleus network (e.g. the U-Net) used as a classifier's segmenter.

    It takes RGB in ``[0, 1]`` (``input_range = "unit"``), normalises with the statistics the
    network was trained with, and post-processes like ``SegmentationModule.predict_masks``.

    Args:
        net: The network: normalised images to logits ``(B, C, H, W)``.
        mode: ``"binary"`` (one logit channel) or ``"three_class"`` (nucleus = class 2).
        arch: Its architecture name (recorded).
        encoder: Its encoder name (recorded).
        in_chans: Input channels it was trained on.
        net_kwargs: Further architecture arguments (recorded; plain values).
        threshold: Nucleus probability threshold (binary).
        centre_radius: Central disk of :func:`~leukemia_wbc.models.postprocess_masks`.
        keep: Components kept by the post-processing.
        mean: Channel means of its training normalisation.
        std: Channel standard deviations of its training normalisation.
        size: Image side ``(H, W)`` it was trained at, or ``None`` when unknown.
        source: Where it came from (a file name), for messages.
    """

    #: Takes RGB in ``[0, 1]`` (or uint8), not the classifier's normalised images.
    input_range = "unit"

    def __init__(
        self,
        net: nn.Module,
        *,
        mode: str = "binary",
        arch: str = "unet",
        encoder: str = "resnet34",
        in_chans: int = 3,
        net_kwargs: Mapping[str, Any] | None = None,
        threshold: float = 0.5,
        centre_radius: float = 0.2,
        keep: KeepMode = "all",
        mean: Sequence[float] = _IMAGENET[0],
        std: Sequence[float] = _IMAGENET[1],
        size: tuple[int, int] | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        self.net = net
        self.mode, self.arch, self.encoder, self.in_chans = mode, arch, encoder, int(in_chans)
        self.net_kwargs = dict(net_kwargs or {})
        self.threshold, self.centre_radius, self.keep = threshold, centre_radius, keep
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.source = source
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.mean: Tensor
        self.std: Tensor
        self.requires_grad_(False)
        self.eval()

    def check_input(self, size: tuple[int, int], channels: int = 3, *, where: str) -> None:
        """Refuse data the network was not trained for (another size or channel count).

        Args:
            size: Image side ``(H, W)`` of the classifier's data.
            channels: Channels of the images.
            where: The argument or file that chose this segmenter (for the message).

        Raises:
            ValueError: Another channel count, or another size than the one it was trained at.
        """
        if channels != self.in_chans:
            raise ValueError(
                f"{where}: the segmentation network {self.source} takes {self.in_chans}-channel "
                f"images, the data's have {channels}; expected a U-Net trained with "
                f"in_chans={channels}"
            )
        if self.size is not None and tuple(size) != self.size:
            raise ValueError(
                f"{where}: the segmentation network {self.source} was trained on "
                f"{self.size[0]}x{self.size[1]} images, the classifier's data is "
                f"{size[0]}x{size[1]}; train the U-Net at the same size (data.size)"
            )

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Post-processed nucleus masks.

        Args:
            images: ``(B, 3, H, W)`` RGB, uint8 or float in ``[0, 1]``.

        Returns:
            ``uint8`` ``(B, 1, H, W)`` masks, 1 on the nucleus.
        """
        x = to_unit_float(check_batch(images, "NetworkSegmenter input")).clamp(0, 1)
        logits: Tensor = self.net((x - self.mean) / self.std)
        if self.mode == "binary":
            probs = logits.sigmoid()
        else:
            probs = (logits.argmax(dim=1, keepdim=True) == 2).float()
        if probs.shape[-2:] != x.shape[-2:]:
            probs = F.interpolate(probs, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return postprocess_masks(
            probs, threshold=self.threshold, centre_radius=self.centre_radius, keep=self.keep
        )

    def train(self, mode: bool = True) -> NetworkSegmenter:
        """Stay in evaluation mode: a segmenter is never trained with its classifier."""
        return super().train(False)


def _checkpoint(path: Path, where: str) -> dict[str, Any]:
    ckpt = load_torch_file(path, what=_EXPECTED, where=where)
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{where}: {path} holds a {type(ckpt).__name__}, not a checkpoint; expected {_EXPECTED}"
        )
    return ckpt


def load_segmenter(path: str | os.PathLike[str], *, where: str = "segmenter") -> NetworkSegmenter:
    """A trained ``SegmentationModule`` checkpoint as a :class:`NetworkSegmenter`.

    Only the network's description (architecture, encoder, mode, post-processing: plain values)
    and its weights are read, with ``weights_only=True``; the training pipeline's channel
    statistics and image size come from the checkpoint when it recorded them.

    Args:
        path: The ``.ckpt`` file.
        where: The argument that named it (for messages).

    Returns:
        The segmenter.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a segmentation checkpoint (e.g. a classifier's), or one whose weights
            do not fit the network it describes.
    """
    file = Path(path)
    ckpt = _checkpoint(file, where)
    task = ckpt.get("leukemia_wbc_task")
    hparams: Any = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    described = isinstance(hparams, dict) and "encoder" in hparams and "arch" in hparams
    if task not in (None, "SegmentationModule") or not described or not isinstance(state, dict):
        what = f"a {task}" if isinstance(task, str) else "something else"
        raise ValueError(
            f"{where}: {file} is not a nucleus segmentation checkpoint (it holds {what}); "
            f"expected {_EXPECTED}"
        )
    init = {k: check_plain(hparams[k], f"{file} hyper_parameters[{k!r}]")
            for k in _NET_ARGS if k in hparams}  # fmt: skip
    pipeline = ckpt.get(PIPELINE_KEY)
    if isinstance(pipeline, dict):
        config = pipeline.get("config") or {}
        init["mean"] = config.get("mean", _IMAGENET[0])
        init["std"] = config.get("std", _IMAGENET[1])
        init["size"] = pipeline.get("size")
    init["source"] = file.name
    weights = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return _network_segmenter(init, weights, f"{where}: {file}")


def _network_segmenter(init: dict[str, Any], weights: Any, where: str) -> NetworkSegmenter:
    """Build the described network, load its weights, wrap it (shared by both loaders)."""
    init = check_plain(init, f"{where} segmenter")
    mode = str(init.get("mode", "binary"))
    in_chans = int(init.get("in_chans", 3))
    net = create_segmentation_net(
        str(init["arch"]), str(init["encoder"]), num_classes=1 if mode == "binary" else 3,
        in_chans=in_chans, encoder_weights=None, **dict(init.get("net_kwargs") or {}),
    )  # fmt: skip
    if not isinstance(weights, dict):
        raise ValueError(f"{where}: the saved segmentation network has no weights")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{where}: the weights do not fit the saved network ({err})") from None
    size = init.get("size")
    return NetworkSegmenter(
        net, mode=mode, arch=str(init["arch"]), encoder=str(init["encoder"]), in_chans=in_chans,
        net_kwargs=init.get("net_kwargs"), threshold=float(init.get("threshold", 0.5)),
        centre_radius=float(init.get("centre_radius", 0.2)), keep=init.get("keep", "all"),
        mean=init.get("mean", _IMAGENET[0]), std=init.get("std", _IMAGENET[1]),
        size=None if size is None else (int(size[0]), int(size[1])),
        source=str(init.get("source", "")),
    )  # fmt: skip


def resolve_segmenter(spec: SegmenterSpec, *, where: str = "segmenter") -> nn.Module | None:
    """The module a segmenter spec names.

    Args:
        spec: A classical method name, a checkpoint path, a module, or ``None``.
        where: The argument (for messages).

    Returns:
        The segmenter module, or ``None``.

    Raises:
        ValueError: A string that is neither a method name nor an existing file, or a file that
            is not a segmentation checkpoint.
    """
    if spec is None or isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text in _CLASSICAL:
            return ClassicalNucleusSegmenter(text)  # type: ignore[arg-type]
        if Path(text).is_file():
            return load_segmenter(text, where=where)
        if Path(text).suffix or os.sep in text or "/" in text:  # meant as a file
            raise ValueError(
                f"{where}: {text} not found; expected a classical method "
                f"({', '.join(_CLASSICAL)}) or {_EXPECTED}"
            )
        raise ValueError(
            f"{where}: {text!r} is neither a classical method ({', '.join(_CLASSICAL)}) nor an "
            f"existing file; expected a method name or {_EXPECTED}"
        )
    if callable(spec):
        raise ValueError(
            f"{where}: got a {type(spec).__name__}; expected a method name, a checkpoint path or "
            "an nn.Module"
        )
    raise ValueError(
        f"{where}: got a {type(spec).__name__}; expected a method name, a checkpoint path or an "
        "nn.Module"
    )


def segmenter_state(module: nn.Module | None) -> dict[str, Any] | None:
    """What a classifier checkpoint records of its segmenter: plain data and tensors.

    Args:
        module: The segmenter.

    Returns:
        ``{"kind": "classical", "init": {...}}``, ``{"kind": "network", "init": {...},
        "state_dict": {...}}``, or ``None`` (no segmenter, or one of a class that cannot be
        rebuilt from data: it is then given again when loading).
    """
    if module is None:
        return None
    if type(module) is ClassicalNucleusSegmenter:
        names = ("method", "k", "opening", "min_area", "centre_radius", "min_distance")
        init = {k: getattr(module, k) for k in names}
        return {"kind": "classical", "init": init}
    if isinstance(module, NetworkSegmenter):
        init = {
            "mode": module.mode, "arch": module.arch, "encoder": module.encoder,
            "in_chans": module.in_chans, "net_kwargs": module.net_kwargs,
            "threshold": module.threshold, "centre_radius": module.centre_radius,
            "keep": module.keep, "mean": module.mean.flatten().tolist(),
            "std": module.std.flatten().tolist(),
            "size": None if module.size is None else list(module.size), "source": module.source,
        }  # fmt: skip
        return {"kind": "network", "init": init, "state_dict": module.net.state_dict()}
    return None


def segmenter_from_state(state: Any, *, where: str = "checkpoint") -> nn.Module | None:
    """Rebuild a segmenter from :func:`segmenter_state`'s output (closed set of kinds).

    Args:
        state: The saved record (or ``None``).
        where: The file it came from (for messages).

    Returns:
        The segmenter, or ``None``.

    Raises:
        ValueError: An unknown kind or arguments that are not plain data.
    """
    if state is None:
        return None
    if not isinstance(state, dict) or state.get("kind") not in ("classical", "network"):
        raise ValueError(f"{where}: the saved segmenter is not one this library writes")
    init = check_plain(state.get("init") or {}, f"{where} segmenter")
    if state["kind"] == "classical":
        method = init.pop("method", "kmeans")
        return ClassicalNucleusSegmenter(method, **init)
    return _network_segmenter(init, state.get("state_dict"), where)
