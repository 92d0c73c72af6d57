"""Shared test configuration: offline mode, fixture generators, real-data location."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TESTS = Path(__file__).resolve().parent
#: The real data shared beside the project checkout (absent for a user who clones alone).
SHARED_DATA = TESTS.parent.parent / "shared" / "data"


def fixture_module(name: str) -> ModuleType:
    """Import ``tests/data/<name>/data.py`` (the seeded generator of a dataset's fixture)."""
    path = TESTS / "data" / name / "data.py"
    spec = importlib.util.spec_from_file_location(f"_fixture_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_fixture(name: str, root: Path, **options: object) -> Path:
    """Write the tiny fixture of dataset ``name`` under ``root`` and return the dataset root.

    ``options`` go to the generator's ``make`` (``layout="tcia"`` for C-NMC, ``masks=False``
    for ALL-IDB, ...).
    """
    return Path(fixture_module(name).make(root, **options))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``realdata`` tests without ``../shared/data``."""
    import torch

    no_cuda = pytest.mark.skip(reason="needs CUDA")
    no_data = pytest.mark.skip(reason=f"{SHARED_DATA} not present")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(no_data)
