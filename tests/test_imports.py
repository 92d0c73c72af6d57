"""The top level is lazy (PEP 562): `import leukemia_wbc` and `leukemia-wbc --help` are cheap."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import leukemia_wbc

INIT = Path(leukemia_wbc.__file__)

#: Each top-level name and the package that defines it for users.
HOMES = {
    "CNMC2019": "leukemia_wbc.data",
    "SyntheticWBC": "leukemia_wbc.data",
    "WBCDataModule": "leukemia_wbc.data",
    "WBCDataset": "leukemia_wbc.data",
    "CellClassifier": "leukemia_wbc.tasks",
    "DualBranchClassifier": "leukemia_wbc.tasks",
    "NucleusClassifier": "leukemia_wbc.tasks",
    "PretrainModule": "leukemia_wbc.tasks",
    "SegmentationModule": "leukemia_wbc.tasks",
    "HandcraftedSVM": "leukemia_wbc.models",
    "TrainedModel": "leukemia_wbc.inference",
    "CrossValidator": "leukemia_wbc.experiments",
}

HEAVY = ("torch", "lightning", "torchvision", "pytorch_lightning", "jsonargparse")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_and_help_load_neither_torch_nor_lightning() -> None:
    run = _python(
        f"""
        import sys
        import leukemia_wbc
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        print("IMPORT", loaded)
        from leukemia_wbc.cli import main
        assert main(["--help"]) == 0
        assert main(["configs"]) == 0
        assert main(["no-such-command"]) == 1
        print("CLI", [m for m in {HEAVY!r} if m in sys.modules])
        assert leukemia_wbc.data.WBCDataModule is leukemia_wbc.WBCDataModule  # lazy subpackage
        assert "torch" in sys.modules
        print("OK")
        """
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "IMPORT []" in run.stdout, run.stdout
    assert "CLI []" in run.stdout, run.stdout
    assert "unknown command 'no-such-command'" in run.stderr
    assert run.stdout.rstrip().endswith("OK")


@pytest.mark.parametrize("name", sorted(HOMES))
def test_top_level_names_are_the_classes_of_their_packages(name: str) -> None:
    got = getattr(leukemia_wbc, name)
    assert got is getattr(importlib.import_module(HOMES[name]), name)
    assert isinstance(got, type) and got.__name__ == name
    assert name in dir(leukemia_wbc)


def test_all_the_lazy_names_and_the_type_checking_imports_agree() -> None:
    """``__all__``, the lazy table and the ``TYPE_CHECKING`` imports name the same classes."""
    tree = ast.parse(INIT.read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1
                typed |= {a.name: f"leukemia_wbc.{stmt.module}" for a in stmt.names}
    assert typed == HOMES
    assert set(leukemia_wbc.__all__) == {*HOMES, "__version__"}
    namespace: dict[str, object] = {}
    exec("from leukemia_wbc import *", namespace)  # every name of __all__ resolves
    assert {n for n in namespace if not n.startswith("__")} == set(HOMES)


def test_every_public_submodule_is_reachable_from_the_top() -> None:
    public = {m.name for m in pkgutil.iter_modules(leukemia_wbc.__path__)}
    public = {m for m in public if not m.startswith("_")}
    assert public <= set(dir(leukemia_wbc))
    for name in sorted(public):
        assert getattr(leukemia_wbc, name) is importlib.import_module(f"leukemia_wbc.{name}")


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="module 'leukemia_wbc' has no attribute 'NoSuch'"):
        leukemia_wbc.NoSuch  # noqa: B018
    with pytest.raises(ImportError, match="NoSuch"):
        exec("from leukemia_wbc import NoSuch", {})


def _best_of(runs: int, *codes: str) -> list[float]:
    """Each snippet's fastest wall time in a fresh interpreter, the snippets interleaved."""
    best = [float("inf")] * len(codes)
    for _ in range(runs):
        for i, code in enumerate(codes):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def test_help_is_fast_against_importing_torch() -> None:
    """``leukemia-wbc --help`` takes well under half the time ``import torch`` does.

    A ratio, measured here, so a slow or loaded machine slows both sides.
    """
    help_s, torch_s = _best_of(
        2, "from leukemia_wbc.cli import main; main(['--help'])", "import torch"
    )
    assert help_s / torch_s < 0.5, f"--help {help_s:.2f} s, import torch {torch_s:.2f} s"
