"""Pipeline modules by name: how a saved pipeline is rebuilt without running code from a file.

A checkpoint records each module of a :class:`~leukemia_wbc.transforms.DevicePipeline` as a
name, its constructor arguments (plain numbers, strings, booleans and lists of them) and its
tensors (``state_dict``). Loading looks the name up in this registry, which holds the
library's modules and those a user registered in code with :func:`register_pipeline_module`:
a file can only choose among classes the running program already chose to trust, never
import a module or call a function it names.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "ModuleConfig",
    "build_module",
    "check_plain",
    "module_config",
    "register_pipeline_module",
    "registered_pipeline_modules",
]

#: A module as saved: ``{"type": name, "init": {argument: plain value}}``.
ModuleConfig = dict[str, Any]

_M = TypeVar("_M", bound=type[nn.Module])
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_pipeline_module(cls: _M) -> _M:
    """Allow ``cls`` in saved pipelines (use as a class decorator).

    The class must keep each constructor argument as an attribute of the same name (so that
    its configuration can be read back) and hold any fitted state in buffers or parameters.
    Registering a name twice with another class is an error.

    Args:
        cls: An ``nn.Module`` subclass (a stain normaliser, background removal, equaliser).

    Returns:
        ``cls`` itself.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
        ValueError: Another class is registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_pipeline_module: expected an nn.Module subclass, got {cls!r}")
    name = cls.__name__
    held = _REGISTRY.get(name)
    if held is not None and held is not cls:
        raise ValueError(
            f"register_pipeline_module: {name!r} is already registered as "
            f"{held.__module__}.{held.__qualname__}; rename the class"
        )
    _REGISTRY[name] = cls
    return cls


def registered_pipeline_modules() -> dict[str, type[nn.Module]]:
    """The registered pipeline modules by name (the library's are registered lazily)."""
    _register_library()
    return dict(_REGISTRY)


def _register_library() -> None:
    from .enhance import CLAHE, BackgroundRemoval, HistogramEqualization
    from .stain import MacenkoNormalizer

    for cls in (MacenkoNormalizer, BackgroundRemoval, HistogramEqualization, CLAHE):
        _REGISTRY.setdefault(cls.__name__, cls)


def check_plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON-like data, or an error naming ``where``.

    Plain means ``None``, ``bool``, ``int``, ``float``, ``str`` and lists (tuples) and
    string-keyed dicts of those. A dict holding ``class_path`` is refused: it is how
    jsonargparse names a class to import.

    Args:
        value: The value.
        where: What it is (for the message), e.g. ``"checkpoint hyper_parameters['lr']"``.

    Returns:
        The value with tuples turned into lists.

    Raises:
        ValueError: Anything else.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if "class_path" in value or "_class_path" in value:
            raise ValueError(f"{where} names a class to import ({value.get('class_path')!r}); "
                             "refused: a saved value may only hold plain data")  # fmt: skip
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            out[key] = check_plain(item, f"{where}[{key!r}]")
        return out
    raise ValueError(
        f"{where} is a {type(value).__name__}; expected plain data (numbers, strings, booleans, "
        "lists)"
    )


def module_config(module: nn.Module, where: str) -> ModuleConfig:
    """The saved form of a registered pipeline module: its name and constructor arguments.

    Args:
        module: The module.
        where: Which pipeline step it is (for the message).

    Returns:
        ``{"type": class name, "init": {argument: value}}``.

    Raises:
        ValueError: The class is not registered, or an argument is not kept as an attribute
            of the same name, or is not plain data.
    """
    cls = type(module)
    if registered_pipeline_modules().get(cls.__name__) is not cls:
        raise ValueError(
            f"pipeline step {where!r}: {cls.__module__}.{cls.__qualname__} is not registered, so "
            "a checkpoint could not rebuild it; decorate the class with "
            "leukemia_wbc.transforms.register_pipeline_module"
        )
    init: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(module, name):
            raise ValueError(
                f"pipeline step {where!r}: {cls.__name__} does not keep its argument {name!r} as "
                "an attribute of that name, so it cannot be saved"
            )
        init[name] = check_plain(getattr(module, name), f"{cls.__name__}.{name}")
    return {"type": cls.__name__, "init": init}


def build_module(config: Any, where: str) -> nn.Module:
    """Rebuild a module from :func:`module_config`'s output, by registered name only.

    Args:
        config: ``{"type": name, "init": {...}}`` read from a file.
        where: Which pipeline step (for the message).

    Returns:
        The module (its state is loaded by the caller).

    Raises:
        ValueError: An unregistered name or arguments that are not plain data.
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("type"), str):
        raise ValueError(f"pipeline step {where!r}: expected {{'type': name, 'init': {{...}}}}")
    name = config["type"]
    cls = registered_pipeline_modules().get(name)
    if cls is None:
        raise ValueError(
            f"pipeline step {where!r}: {name!r} is not a registered pipeline module (known: "
            f"{', '.join(sorted(_REGISTRY))}); register the class in code with "
            "leukemia_wbc.transforms.register_pipeline_module before loading"
        )
    init = check_plain(config.get("init") or {}, f"pipeline step {where!r} arguments")
    module: nn.Module = cls(**_tuples(cls, init))
    return module


def _tuples(cls: type[nn.Module], init: dict[str, Any]) -> dict[str, Any]:
    """Lists back to tuples where the constructor's default is a tuple (e.g. a grid size)."""
    params = inspect.signature(cls).parameters
    return {
        k: tuple(v) if isinstance(v, list) and k in params
        and isinstance(params[k].default, tuple) else v
        for k, v in init.items()
    }  # fmt: skip
