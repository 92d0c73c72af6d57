"""timm backbones by name, with weights from a local file and an offline-safe ImageNet download.

A backbone is any `timm <https://github.com/huggingface/pytorch-image-models>`_ model created with
``num_classes=0``: its forward pass returns pooled features of size ``backbone.num_features``.

Weights come from one of three places (see :func:`create_backbone`):

- ``None``: random initialisation;
- a local file: a timm or torchvision state dict, a timm training checkpoint or a Lightning
  checkpoint, loaded with ``torch.load(..., weights_only=True)`` (never arbitrary pickles);
- ``"imagenet"``: timm's pretrained weights, from the Hugging Face cache when present, otherwise
  downloaded; offline, this fails within seconds with a message saying how to pass a local file.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import urlparse

import timm
from torch import nn

from ._weights import load_local_weights, read_state_dict

__all__ = ["Weights", "create_backbone", "feature_dim", "read_state_dict"]

#: What a ``weights`` argument takes: ``None`` (random), ``"imagenet"`` or a local file.
Weights: TypeAlias = Literal["imagenet"] | str | os.PathLike[str] | None

#: Seconds to wait for a TCP connection to the weights host before declaring it unreachable.
_PROBE_TIMEOUT_S = 3.0
#: ``timm.create_model`` arguments that :func:`create_backbone` sets itself.
_RESERVED_KWARGS = frozenset(
    {"num_classes", "pretrained", "pretrained_cfg_overlay", "checkpoint_path", "features_only"}
)


def feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled feature vector that a backbone from :func:`create_backbone` returns.

    timm's ``num_features`` is the width of the last feature map; a model with pre-logits layers
    returns more (timm's VGG-16: ``num_features`` 512, output 4096). ``head_hidden_size`` is the
    output width when timm defines it, so it is preferred.

    Args:
        backbone: A timm model created with ``num_classes=0``.

    Returns:
        The number of features per sample in the backbone's output.

    Raises:
        ValueError: If ``backbone`` has neither ``head_hidden_size`` nor ``num_features``.
    """
    for attr in ("head_hidden_size", "num_features"):
        value = getattr(backbone, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"argument 'backbone' ({type(backbone).__name__}) has neither head_hidden_size nor "
        "num_features: expected a timm model"
    )


def _check_name(name: str) -> None:
    """Raise a ValueError listing close matches when ``name`` is not a timm model."""
    if timm.is_model(name):
        return
    base = name.split(".", 1)[0]
    close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
    containing = [m for m in timm.list_models(f"*{base}*") if m not in close] if base else []
    matches = close + containing[: max(0, 8 - len(close))]
    hint = f"close matches: {', '.join(matches)}" if matches else "see timm.list_models()"
    raise ValueError(f"argument 'name': {name!r} is not a timm model name ({hint})")


def _env_true(var: str) -> bool:
    """Whether environment variable ``var`` is set to a true value (as huggingface_hub reads it)."""
    return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` s (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="leukemia_wbc-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result) and result[0]


def _cached_hub_file(hub_id: str, filename: str | None, cache_dir: Any) -> str | None:
    """The path of ``hub_id``'s weights in the local Hugging Face cache, if they are there."""
    from huggingface_hub import try_to_load_from_cache

    for candidate in (filename,) if filename else ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, candidate, cache_dir=cache_dir)
        if isinstance(path, str):
            return path
    return None


def _imagenet_backbone(name: str, in_chans: int, timm_kwargs: dict[str, Any]) -> nn.Module:
    """A backbone with timm's pretrained weights: cached, downloaded, or a fast, clear error."""
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id: str | None = getattr(cfg, "hf_hub_id", None)
    url: str | None = getattr(cfg, "url", None)
    if not hub_id and not url:
        variants = timm.list_pretrained(f"{name.split('.', 1)[0]}*")
        raise ValueError(
            f"argument 'weights': timm has no pretrained weights for {name!r} (pretrained "
            f"variants: {', '.join(variants[:8]) or 'none'})"
        )
    build = {**timm_kwargs, "num_classes": 0, "in_chans": in_chans, "pretrained": True}
    source = f"the Hugging Face Hub ({hub_id})" if hub_id else url
    if hub_id:
        filename = getattr(cfg, "hf_hub_filename", None)
        cached = _cached_hub_file(hub_id, filename, timm_kwargs.get("cache_dir"))
        if cached is not None:
            overlay = {"file": cached, "source": ""}
            return timm.create_model(name, pretrained_cfg_overlay=overlay, **build)
    host = urlparse(constants.ENDPOINT if hub_id else str(url)).hostname or "huggingface.co"
    reason = None
    if _env_true("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set and the weights are not in the local cache"
    elif not _reachable(host, 443, _PROBE_TIMEOUT_S):
        reason = f"no connection to {host}:443 (tried for up to {_PROBE_TIMEOUT_S:g} s)"
    hint = (
        f"Pass a local file instead: create_backbone({name!r}, weights='path/to/weights.pth') "
        "takes a timm or torchvision state dict, a .safetensors file or a Lightning checkpoint. "
        "On a machine with network access, save one with torch.save(timm.create_model("
        f"{name!r}, pretrained=True).state_dict(), 'weights.pth')"
        + (f", or download {hub_id}/model.safetensors from the Hub." if hub_id else ".")
    )
    if reason is not None:
        raise RuntimeError(
            f"cannot get ImageNet weights for {name!r} from {source}: {reason}. {hint}"
        )
    try:
        return timm.create_model(name, **build)
    except Exception as err:  # hub, HTTP and file errors differ between library versions
        raise RuntimeError(
            f"cannot get ImageNet weights for {name!r} from {source}: {err}. {hint}"
        ) from err


def create_backbone(
    name: str,
    *,
    weights: Weights = None,
    in_chans: int = 3,
    prefix: str | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create a timm model by name as a backbone that returns pooled features.

    The model is built with ``num_classes=0``: its classifier is an identity and its forward
    pass returns ``(B, feature_dim(model))`` features (see :func:`feature_dim`; timm's
    ``num_features`` differs for models with pre-logits layers such as VGG).

    Weights:

    - ``None``: random initialisation (timm's own).
    - ``"imagenet"``: timm's default pretrained weights for ``name`` (a tag selects others,
      e.g. ``"resnet50.a1_in1k"``), read from the Hugging Face cache when present, otherwise
      downloaded. Offline (``HF_HUB_OFFLINE`` set, or no TCP connection to the host within 3 s)
      this raises at once instead of letting the hub retry for about 45 s.
    - a path: a local timm or torchvision state dict, ``.safetensors`` file, timm training
      checkpoint or Lightning checkpoint (see :func:`read_state_dict`). The backbone's entries
      are found under the key prefix that matches most of the model's keys (``""``,
      ``"backbone."``, ``"model.backbone."``, ...), or under ``prefix`` when given; classifier
      entries are dropped, the input convolution is adapted to ``in_chans`` with timm's
      ``adapt_input_conv`` (summed for one channel, repeated and rescaled for more), and the
      result is loaded strictly. When the keys do not match directly, the converter that the
      model's timm module defines for foreign layouts (e.g. torchvision's VGG) is tried.

    Args:
        name: A timm model name, optionally with a pretrained tag (``"resnet50"``,
            ``"mobilenetv2_100"``, ``"vgg16"``, ``"resnet50.a1_in1k"``).
        weights: ``None``, ``"imagenet"`` or the path of a local weights file.
        in_chans: Number of input channels (1 for grayscale input).
        prefix: Key prefix of the backbone inside a local checkpoint (e.g.
            ``"model.nucleus_branch."``); found automatically when ``None``.
        **timm_kwargs: Further arguments of ``timm.create_model`` (``drop_rate``,
            ``drop_path_rate``, ``global_pool``, ``cache_dir``, ...).

    Returns:
        The backbone, in training mode.

    Raises:
        ValueError: If ``name`` is not a timm model (close matches are listed), ``in_chans`` is
            not positive, ``timm_kwargs`` sets an argument that this function owns, ``prefix``
            is given without a local file, the local file holds no weights of this architecture
            (missing, unexpected or mis-shaped keys are named), or timm has no pretrained
            weights for ``name``.
        FileNotFoundError: If ``weights`` is a path that does not exist.
        RuntimeError: If ImageNet weights are requested but cannot be cached or downloaded
            (offline); the message says how to pass a local file instead.
    """
    _check_name(name)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"argument 'in_chans' must be a positive int, got {in_chans!r}")
    reserved = sorted(_RESERVED_KWARGS.intersection(timm_kwargs))
    if reserved:
        raise ValueError(
            f"create_backbone sets {', '.join(reserved)} itself; pass weights= for pretrained "
            "weights and build a head on feature_dim(backbone) for classes"
        )
    if prefix is not None and (weights is None or weights == "imagenet"):
        raise ValueError(
            f"argument 'prefix' ({prefix!r}) applies to a local weights file only, but weights="
            f"{weights!r}"
        )
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "argument 'weights' must be None, 'imagenet' or a file path, got "
            f"{type(weights).__name__}"
        )
    if isinstance(weights, str) and weights == "imagenet":
        return _imagenet_backbone(name, in_chans, timm_kwargs)
    model = timm.create_model(
        name, pretrained=False, num_classes=0, in_chans=in_chans, **timm_kwargs
    )
    if weights is None:
        return model
    load_local_weights(model, name, Path(weights), in_chans, prefix)
    return model
