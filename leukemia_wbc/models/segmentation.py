"""Nucleus segmentation: segmentation-models-pytorch networks, post-processing, classical methods.

Three parts, plain ``torch.nn`` (the Lightning task is
:class:`leukemia_wbc.tasks.SegmentationModule`):

* :func:`create_segmentation_net`: any segmentation-models-pytorch architecture (U-Net by
  default) over any of its encoders or any timm model (``"tu-<timm name>"``), randomly
  initialised or with encoder weights from a local file;
* :func:`postprocess_masks`: threshold, keep the nucleus of the central cell, fill holes;
* :class:`ClassicalNucleusSegmenter`: parameter-free segmentation by Otsu thresholds of
  several cues, colour k-means, or a watershed split of touching nuclei.

The classical segmenter lives in :mod:`leukemia_wbc.models.classical` (re-exported here),
with the comparison of its methods on real cells.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal, get_args

import segmentation_models_pytorch as smp
import timm
import torch
from torch import Tensor, nn

from ..transforms.masks import fill_holes, keep_central
from ._weights import _first, _strip_prefix, read_state_dict
from .classical import ClassicalMethod, ClassicalNucleusSegmenter

__all__ = [
    "ClassicalMethod",
    "ClassicalNucleusSegmenter",
    "KeepMode",
    "check_postprocess_args",
    "create_segmentation_net",
    "postprocess_masks",
    "segmentation_architectures",
]

#: Which components touching the image centre :func:`postprocess_masks` keeps.
KeepMode = Literal["largest", "all"]

#: Arguments of the smp architectures that :func:`create_segmentation_net` sets from its own.
_SET_HERE = frozenset({"encoder_name", "encoder_weights", "in_channels", "classes"})
_KEEP: tuple[str, ...] = get_args(KeepMode)


def segmentation_architectures() -> tuple[str, ...]:
    """Names of the segmentation-models-pytorch architectures (``"unet"``, ``"fpn"``, ...).

    Returns:
        The lower-case names accepted by :func:`create_segmentation_net`.
    """
    return tuple(smp.MODEL_ARCHITECTURES_MAPPING)


def _check_encoder(encoder: str) -> None:
    if encoder.startswith("tu-"):
        if not timm.is_model(encoder[3:]):
            raise ValueError(
                f"argument 'encoder': {encoder!r} names no timm model ({encoder[3:]!r} is "
                "unknown to timm.list_models()); expected 'tu-<timm model name>'"
            )
    elif encoder not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"argument 'encoder': unknown encoder {encoder!r}; expected 'tu-<timm model name>' "
            f"(e.g. 'tu-resnet18') or one of {sorted(smp.encoders.get_encoder_names())}"
        )


def _load_encoder_weights(net: nn.Module, encoder: str, path: str | os.PathLike[str]) -> None:
    """Load the encoder's weights from a local file, strictly on the encoder's own keys."""
    file = Path(path)
    # A timm ("tu-") encoder wraps its timm model as ``encoder.model``.
    encoder_module: Any = net.encoder
    target: nn.Module = encoder_module.model if encoder.startswith("tu-") else encoder_module
    expected = target.state_dict()
    state, prefix = _strip_prefix(read_state_dict(file), set(expected), None, file)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs encoder {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or shapes:
        where = f" under the key prefix {prefix!r}" if prefix else ""
        raise ValueError(
            f"argument 'encoder_weights': {file} does not hold weights of the encoder "
            f"{encoder!r}{where}: {len(missing)} missing keys ({_first(missing)}), "
            f"{len(shapes)} shape mismatches ({_first(shapes, 3)}); expected a state dict or "
            "checkpoint of this encoder (other keys, such as a classifier, are ignored)"
        )
    target.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)


def _check_arch_kwargs(arch: str, kwargs: dict[str, Any]) -> None:
    """Reject arguments the architecture's class does not name (smp would ignore them)."""
    params = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[arch]).parameters
    accepted = sorted(
        name
        for name, p in params.items()
        if p.kind is not p.VAR_KEYWORD and name not in _SET_HERE and name != "self"
    )
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"arguments {unknown} are not arguments of the architecture {arch!r} (or are set "
            f"by create_segmentation_net itself); expected some of {accepted}"
        )


def create_segmentation_net(
    arch: str = "unet",
    encoder: str = "resnet34",
    num_classes: int = 1,
    in_chans: int = 3,
    encoder_weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A segmentation-models-pytorch network by architecture and encoder name.

    The network maps ``(B, in_chans, H, W)`` float images to ``(B, num_classes, H, W)`` logits.
    U-Net takes any size (its decoder resizes to each skip connection); the other
    architectures need ``H`` and ``W`` divisible by the encoder's output stride (32 for the
    usual encoders, ``2 ** encoder_depth`` for shallower ones): another size raises, at forward
    time, segmentation-models-pytorch's ``RuntimeError`` naming the size to pad to
    (:class:`~leukemia_wbc.tasks.SegmentationModule` raises a ``ValueError`` first).

    Args:
        arch: Architecture, any of :func:`segmentation_architectures` (case-insensitive).
        encoder: A segmentation-models-pytorch encoder (``"resnet34"``, ``"mobilenet_v2"``,
            ...) or any timm model as ``"tu-<timm name>"`` (``"tu-resnet18"``,
            ``"tu-mobilenetv2_050"``).
        num_classes: Output channels (1 for a binary nucleus mask).
        in_chans: Input channels.
        encoder_weights: ``None`` for random initialisation (never downloads), or a local
            file read by :func:`~leukemia_wbc.models.read_state_dict`: a state dict of the
            encoder (for ``"tu-"`` encoders: of the timm model, e.g. ``timm.create_model(name)
            .state_dict()``; a classifier in it is ignored) or a checkpoint holding one under
            a prefix, found automatically (e.g. ``net.encoder.`` of a
            :class:`~leukemia_wbc.tasks.SegmentationModule` checkpoint).
        **kwargs: Further arguments of the architecture's class, e.g. ``encoder_depth=3,
            decoder_channels=(32, 16, 8)`` for a small U-Net of output stride 8.

    Returns:
        The network (a ``segmentation_models_pytorch`` model).

    Raises:
        ValueError: An unknown architecture or encoder, non-positive ``num_classes`` or
            ``in_chans``, ``kwargs`` the architecture does not take, or a weights file that
            does not match the encoder.
        FileNotFoundError: ``encoder_weights`` names no file.
    """
    choices = segmentation_architectures()
    if not isinstance(arch, str) or arch.lower() not in choices:
        raise ValueError(
            f"argument 'arch': unknown architecture {arch!r}; expected one of {choices}"
        )
    if not isinstance(encoder, str):
        raise ValueError(f"argument 'encoder': expected a str, got {type(encoder).__name__}")
    _check_encoder(encoder)
    for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"argument {name!r}: expected a positive int, got {value!r}")
    _check_arch_kwargs(arch.lower(), kwargs)
    net: nn.Module = smp.create_model(
        arch.lower(),
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_chans,
        classes=num_classes,
        **kwargs,
    )
    if encoder_weights is not None:
        _load_encoder_weights(net, encoder, encoder_weights)
    return net


def _check_masks(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, 1, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1 or x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty (B, 1, H, W) tensor, got {tuple(x.shape)}")
    return x


def check_postprocess_args(centre_radius: float, keep: str) -> None:
    """Validate the arguments of :func:`postprocess_masks` (the task checks them at init too).

    Args:
        centre_radius: See :func:`postprocess_masks`.
        keep: See :func:`postprocess_masks`.

    Raises:
        ValueError: A radius outside ``[0, 1]`` or an unknown ``keep`` mode.
    """
    if not 0.0 <= centre_radius <= 1.0:
        raise ValueError(
            f"argument 'centre_radius': expected a value in [0, 1], got {centre_radius}"
        )
    if keep not in _KEEP:
        raise ValueError(f"argument 'keep': expected one of {_KEEP}, got {keep!r}")


def postprocess_masks(
    masks: Tensor,
    *,
    threshold: float = 0.5,
    centre_radius: float = 0.2,
    keep: KeepMode = "largest",
) -> Tensor:
    """Binary nucleus masks of the central cell: threshold, central component, holes filled.

    Batched, no loop over images. A component touches the centre when one of its pixels lies
    within ``centre_radius`` times the shorter side of the image centre. The largest such
    component is kept (``keep="all"``: every one, e.g. all lobes of a neutrophil nucleus); an
    image where none touches keeps the component nearest the centre; an empty mask stays
    empty. Holes inside the kept component(s) are filled.

    Args:
        masks: ``(B, 1, H, W)``: floating-point probabilities (foreground where
            ``> threshold``), or a ``bool`` / integer mask (foreground where ``> 0``).
        threshold: Probability threshold for floating-point input.
        centre_radius: Radius of the central disk as a fraction of the shorter side.
        keep: ``"largest"`` or ``"all"`` of the components touching the central disk.

    Returns:
        ``uint8`` ``(B, 1, H, W)`` with values 0 and 1.

    Raises:
        TypeError: ``masks`` is not a tensor.
        ValueError: A shape other than ``(B, 1, H, W)``, ``centre_radius`` outside ``[0, 1]``
            or an unknown ``keep``.
    """
    _check_masks(masks, "postprocess_masks input")
    check_postprocess_args(centre_radius, keep)
    binary = masks > threshold if masks.is_floating_point() else masks > 0
    radius = centre_radius * min(masks.shape[-2:])
    kept = keep_central(binary, radius, keep_all=keep == "all")
    return fill_holes(kept).to(torch.uint8)
