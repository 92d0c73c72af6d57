"""Reading local weights files and loading a backbone's entries from them into a timm model.

Private machinery behind :func:`leukemia_wbc.models.create_backbone`; :func:`read_state_dict` is
public and re-exported from :mod:`leukemia_wbc.models.backbones`.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._safe_load import unreadable_reason

__all__ = ["load_local_weights", "read_state_dict"]

#: Top-level keys under which checkpoints nest their state dict, in order of preference:
#: Lightning and timm training checkpoints (``state_dict``), some repositories (``model``), timm's
#: exponential moving average (``state_dict_ema``).
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema")
#: Names under which timm model modules define their converter from foreign checkpoint layouts
#: (e.g. torchvision's VGG classifier into timm's ``pre_logits``).
_FILTER_FN_NAMES = ("checkpoint_filter_fn", "_filter_fn", "_checkpoint_filter_fn")


def _is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a non-empty mapping from ``str`` to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _load_file(path: Path) -> object:
    """Deserialise ``path`` (safetensors or a ``torch.save`` file) without executing code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ValueError(f"cannot read the safetensors file {path}: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # never PyTorch's advice to retry with weights_only=False
        raise ValueError(
            f"cannot read {path} as a PyTorch weights file ({unreadable_reason(path, err)}); "
            "expected a state dict or checkpoint written by torch.save (re-save only the "
            "tensors, e.g. torch.save(model.state_dict(), path)) or a .safetensors file"
        ) from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local weights file, without executing pickled code.

    The file is loaded with ``torch.load(path, map_location="cpu", weights_only=True)``, or with
    :mod:`safetensors` when its suffix is ``.safetensors``. Accepted contents:

    - a plain state dict (``str`` keys, tensor values), e.g. ``torch.save(model.state_dict())``
      of a timm or torchvision model;
    - a checkpoint dict holding a state dict under ``"state_dict"`` (Lightning, timm training
      scripts), ``"model"`` or ``"state_dict_ema"``, tried in that order.

    Keys are returned unchanged (a Lightning checkpoint keeps its ``model.…`` prefixes); see
    :func:`create_backbone` for extracting a backbone from them.

    Args:
        path: The weights file.

    Returns:
        A new dict mapping parameter and buffer names to CPU tensors.

    Raises:
        FileNotFoundError: If ``path`` does not exist or is not a file.
        ValueError: If the file cannot be deserialised with ``weights_only=True`` or holds no
            state dict in one of the accepted forms.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"weights file {file} not found (expected a local state dict or checkpoint file)"
        )
    obj = _load_file(file)
    if _is_state_dict(obj):
        assert isinstance(obj, Mapping)
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            nested: Any = obj.get(key)
            if _is_state_dict(nested):
                return dict(nested)
        found = ", ".join(repr(k) for k in list(obj)[:10])
        raise ValueError(
            f"{file} holds a dict without a state dict: expected str -> tensor entries, or one "
            f"under {', '.join(repr(k) for k in _NESTED_KEYS)}; found keys {found or '(none)'}"
        )
    raise ValueError(
        f"{file} holds a {type(obj).__name__}, expected a state dict (str -> tensor) or a "
        f"checkpoint dict with one under {', '.join(repr(k) for k in _NESTED_KEYS)}"
    )


def _as_tuple(value: object) -> tuple[str, ...]:
    """A pretrained-config entry (``str``, sequence of ``str`` or ``None``) as a tuple."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def _first(keys: Any, count: int = 5) -> str:
    """The first ``count`` of ``keys``, comma-separated, with an ellipsis when there are more."""
    items = list(keys)
    text = ", ".join(str(k) for k in items[:count])
    return text + (", ..." if len(items) > count else "")


def _prefix_counts(keys: Any, expected: set[str]) -> Counter[str]:
    """Count, for each prefix ending at a dot, the keys that are the prefix plus an expected key."""
    counts: Counter[str] = Counter()
    for key in keys:
        start = 0
        while True:
            if key[start:] in expected:
                counts[key[:start]] += 1
            dot = key.find(".", start)
            if dot < 0:
                break
            start = dot + 1
    return counts


def _strip_prefix(
    state: dict[str, torch.Tensor], expected: set[str], prefix: str | None, file: Path
) -> tuple[dict[str, torch.Tensor], str]:
    """The entries of ``state`` under ``prefix`` (found automatically when ``None``), stripped."""
    if prefix is None:
        counts = _prefix_counts(state, expected)
        best = max(counts.values(), default=0)
        if 2 * best < len(expected):
            # Not this architecture: compare the file's own keys, to name what differs.
            return dict(state), ""
        tied = sorted(p for p, c in counts.items() if c == best)
        if len(tied) > 1:
            raise ValueError(
                f"{file} holds several networks that match the backbone equally well, under the "
                f"key prefixes {', '.join(repr(p) for p in tied)}: pass prefix= to choose one"
            )
        prefix = tied[0]
    elif not any(k.startswith(prefix) for k in state):
        raise ValueError(
            f"argument 'prefix': no key of {file} starts with {prefix!r} (keys there: "
            f"{_first(state)})"
        )
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, prefix


def _drop_classifier(
    state: dict[str, torch.Tensor], model: nn.Module, expected: set[str]
) -> dict[str, torch.Tensor]:
    """``state`` without the classifier entries that the pooled-feature model does not have."""
    heads = _as_tuple(getattr(model, "pretrained_cfg", {}).get("classifier"))
    return {
        k: v
        for k, v in state.items()
        if k in expected or not any(k.startswith(f"{h}.") for h in heads)
    }


def _adapt_input_conv(
    state: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    model: nn.Module,
    in_chans: int,
    file: Path,
) -> None:
    """Adapt, in place, the input convolution of ``state`` to the model's ``in_chans``."""
    from timm.models import adapt_input_conv

    for conv in _as_tuple(getattr(model, "pretrained_cfg", {}).get("first_conv")):
        key = f"{conv}.weight"
        if key not in state or key not in model_state:
            continue
        weight, target = state[key], model_state[key]
        if weight.ndim != 4 or target.ndim != 4 or weight.shape[1] == target.shape[1]:
            continue
        base, remainder = divmod(weight.shape[1] * in_chans, target.shape[1])
        try:
            if remainder or base < 1:
                raise NotImplementedError("channel counts are not multiples of each other")
            state[key] = adapt_input_conv(in_chans, weight, base_chans=base)
        except (NotImplementedError, AssertionError) as err:
            raise ValueError(
                f"cannot adapt the input convolution {key} of {file} with shape "
                f"{tuple(weight.shape)} to in_chans={in_chans} (model expects "
                f"{tuple(target.shape)}): {err}"
            ) from err


def _problems(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences in keys and shapes between ``state`` and the model's."""
    missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if k in model_state and v.shape != model_state[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_first(shapes, 3)})")
    return problems


def _timm_filter_fn(model: nn.Module) -> Callable[..., dict[str, torch.Tensor]] | None:
    """The converter from foreign checkpoint layouts defined by the model's timm module, if any."""
    module = sys.modules.get(type(model).__module__)
    for attr in _FILTER_FN_NAMES:
        fn = getattr(module, attr, None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def _prepare(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    model_state: dict[str, torch.Tensor],
    in_chans: int,
    file: Path,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop the classifier, adapt the input convolution, and list what still does not match."""
    state = _drop_classifier(state, model, set(model_state))
    _adapt_input_conv(state, model_state, model, in_chans, file)
    return state, _problems(state, model_state)


def _convert(
    converter: Callable[..., dict[str, torch.Tensor]],
    state: dict[str, torch.Tensor],
    model: nn.Module,
) -> dict[str, torch.Tensor]:
    """Apply a timm checkpoint converter taking ``(state_dict)`` or ``(state_dict, model)``."""
    if len(inspect.signature(converter).parameters) >= 2:
        return dict(converter(dict(state), model))
    return dict(converter(dict(state)))


def load_local_weights(
    model: nn.Module, name: str, file: Path, in_chans: int, prefix: str | None
) -> None:
    """Load the backbone held by ``file`` into ``model`` strictly (see :func:`create_backbone`).

    Args:
        model: A timm model built with ``num_classes=0`` and ``in_chans``.
        name: The timm name ``model`` was built from, for messages.
        file: The weights file.
        in_chans: The number of input channels ``model`` was built with.
        prefix: The key prefix of the backbone in the file; found automatically when ``None``.

    Raises:
        FileNotFoundError: If ``file`` does not exist.
        ValueError: If ``file`` cannot be read or does not hold weights of this architecture.
    """
    model_state = model.state_dict()
    sub, found_prefix = _strip_prefix(read_state_dict(file), set(model_state), prefix, file)
    sub, problems = _prepare(sub, model, model_state, in_chans, file)
    converter = _timm_filter_fn(model)
    note = ""
    if problems and converter is not None:
        # A foreign layout (e.g. torchvision's VGG classifier): timm's own converter may map it.
        try:
            converted, converted_problems = _prepare(
                _convert(converter, sub, model), model, model_state, in_chans, file
            )
        except Exception as err:  # the converter expects yet another layout; report the keys
            note = f" (timm's converter for this architecture failed too: {err!r})"
        else:
            if not converted_problems:
                sub, problems = converted, []
    if problems:
        where = f" (keys under the prefix {found_prefix!r})" if found_prefix else ""
        raise ValueError(
            f"{file} does not match the timm architecture {name!r}{where}: "
            f"{'; '.join(problems)}{note}. Is it a checkpoint for another architecture? Pass the "
            "name it was trained with, or prefix= to choose the backbone's keys in a checkpoint "
            "that holds several networks."
        )
    model.load_state_dict(sub, strict=True)
