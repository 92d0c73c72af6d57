"""A module's forward compiled with ``torch.compile``, switched on only where it is wanted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
from torch import nn

__all__ = ["COMPILE_MODES", "CompileMode", "CompiledForward"]

#: ``torch.compile`` modes: ``"reduce-overhead"`` adds CUDA graphs (launch-bound small batches
#: on a GPU), ``"max-autotune"`` also searches kernels; ``"default"`` fuses only.
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)


class CompiledForward:
    """``module.forward`` compiled once (on first use) and used inside :meth:`active` only.

    Outside the block the module runs eagerly, so what needs gradients or hooks (Captum's
    attributions, training) never meets the compiled graph. Shapes are static
    (``dynamic=False``): each new batch shape compiles once more, so keep the batch size fixed.

    Args:
        module: The module whose ``forward`` is compiled.
        mode: A :data:`CompileMode`, or ``None`` (eager: :meth:`active` changes nothing).

    Raises:
        ValueError: An unknown mode.
    """

    def __init__(self, module: nn.Module, mode: CompileMode | None) -> None:
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"compile: expected one of {COMPILE_MODES} or None, got {mode!r}")
        self.module = module
        self.mode: CompileMode | None = mode
        self._compiled: Callable[..., Any] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the module's calls inside the block through the compiled forward."""
        if self.mode is None:
            yield
            return
        if self._compiled is None:
            self._compiled = torch.compile(self.module.forward, mode=self.mode, dynamic=False)
        # an instance attribute shadows the class's forward for nn.Module.__call__
        self.module.__dict__["forward"] = self._compiled
        try:
            yield
        finally:
            self.module.__dict__.pop("forward", None)
