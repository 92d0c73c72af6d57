"""Old import paths that keep working for one release, with a :class:`DeprecationWarning`.

A module or name that moved leaves a forwarder behind. The forwarder imports its new home by
name only when an old path is used, so the old package never imports the new one up front
(the layers keep pointing one way) and a user of the new paths sees no warning.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REMOVED_IN", "moved_module", "moved_names"]

REMOVED_IN = "0.3"


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path will be removed in leukemia_wbc {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )


def moved_module(old: str, new: str) -> Callable[[str], Any]:
    """Turn module ``old`` into a forwarder to module ``new``; warns once, on import.

    Use it as the whole body of the old module: ``__getattr__ = moved_module(__name__, NEW)``.

    Args:
        old: The old module's name (``__name__``).
        new: The dotted name of the module that now holds its contents.

    Returns:
        A module-level ``__getattr__`` that reads every name from ``new``.
    """
    _warn(old, new)

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(new), name)

    return __getattr__


def moved_names(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A package ``__getattr__`` that still serves names that moved to other modules.

    Args:
        package: The package's name (``__name__``).
        names: Old public name to the dotted module that now defines it.

    Returns:
        The hook: warns and returns the object for a moved name, raises
        :class:`AttributeError` for any other.
    """

    def __getattr__(name: str) -> Any:
        home = names.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _warn(f"{package}.{name}", f"{home}.{name}")
        return getattr(importlib.import_module(home), name)

    return __getattr__
