"""The shared file helpers: atomic writes with ordinary permissions, JSON-safe values."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from leukemia_wbc._io import atomic_write_bytes, atomic_write_text, json_safe


def test_an_atomic_write_has_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "sub" / "atomic.txt", "résumé")
    written = tmp_path / "sub" / "atomic.txt"
    assert written.read_text(encoding="utf-8") == "résumé"
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # the run is killed between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_json_safe_turns_nan_into_none_at_any_depth() -> None:
    value = {"a": math.nan, "b": [1.0, (math.nan, "x")], "c": 2}
    assert json_safe(value) == {"a": None, "b": [1.0, [None, "x"]], "c": 2}
