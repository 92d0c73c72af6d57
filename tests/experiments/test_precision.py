"""``precision="auto"``: bfloat16 where the CPU has the instructions, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leukemia_wbc.experiments import cpu_has_bf16, resolve_precision
from leukemia_wbc.experiments import precision as precision_module


def test_cpu_flags_decide_bf16(tmp_path: Path) -> None:
    """The flags line names AVX-512 BF16 or AMX: yes; plain AVX-512, or no file: no."""
    zen4 = tmp_path / "zen4"
    zen4.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    skylake = tmp_path / "skylake"
    skylake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    sapphire = tmp_path / "spr"
    sapphire.write_text("flags\t\t: avx512f amx_tile amx_bf16\n")
    assert cpu_has_bf16(zen4) and cpu_has_bf16(sapphire)
    assert not cpu_has_bf16(skylake)
    assert not cpu_has_bf16(tmp_path / "absent")


def test_auto_resolves_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A given precision is kept; ``auto`` follows the CPU's flags (no CUDA here)."""
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
