"""The package's shape (docs/architecture.md): one-way layers, no cycles, no hidden globals."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "leukemia_wbc"

#: Layer of each top-level package or root module: an import may point to the same or a lower
#: layer only, and two different packages of one layer do not import each other.
LAYERS: dict[str, int] = {
    "_io": 0,
    "_deprecation": 0,
    "configs": 0,
    "transforms": 1,
    "data": 2,
    "models": 3,
    "tasks": 4,
    "explain": 5,
    "inference": 5,
    "metrics": 5,
    "experiments": 6,
    "evaluation": 7,
    "smear": 7,
    "report": 8,
    "_commands": 9,
    "demo": 9,
    "cli": 10,
    "__main__": 11,
    "__init__": 11,
}

#: Root modules of one layer that may import each other (the trained model explains itself).
SAME_LAYER_ALLOWED = {("inference", "explain")}

#: Public-internal root modules that every package may import, private names and all.
SHARED = {"_io", "_deprecation"}

#: The largest module, in lines (DESIGN.md: "no module over about 400 lines").
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_shim(tree: ast.Module) -> bool:
    """A deprecated path: a forwarder whose whole body is ``moved_module``."""
    return any(
        isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Call)
        and getattr(n.value.func, "id", "") == "moved_module"
        for n in tree.body
    )


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """Every import of ``name`` (also inside functions and ``TYPE_CHECKING``): module, names."""
    tree = ast.parse(path.read_text())
    if _is_shim(tree):
        return []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("leukemia_wbc"):
                continue
            names = [a.name for a in node.names]
            # "from pkg import module" imports the module
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            found.append(
                (target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno)
            )
            found += [(s, [], node.lineno) for s in subs]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [], node.lineno) for a in node.names if a.name.startswith("leukemia_wbc")
            ]
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    """Module -> modules it makes Python execute (the target and the packages above it)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        mine = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for target, _, _ in _imports(name, path):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in MODULES and step not in mine and step != name:
                    graph[name].add(step)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_layer_table_names_every_top_level_module() -> None:
    assert {_top(m) for m in MODULES} <= set(LAYERS)


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for name, path in MODULES.items():
        mine = _top(name)
        for target, _, line in _imports(name, path):
            theirs = _top(target)
            if theirs == mine or theirs == "__init__":
                continue
            up = LAYERS[theirs] > LAYERS[mine]
            across = LAYERS[theirs] == LAYERS[mine] and (mine, theirs) not in SAME_LAYER_ALLOWED
            if up or across:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert wrong == []


def test_no_private_imports_across_packages() -> None:
    wrong = []
    for name, path in MODULES.items():
        mine = _top(name)
        for target, names, line in _imports(name, path):
            theirs = _top(target)
            if theirs in (mine, "__init__") or theirs in SHARED:
                continue
            private_module = any(p.startswith("_") for p in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {target} {private_names}")
    assert wrong == []


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def test_importing_every_module_changes_no_global_state() -> None:
    names = sorted(m for m, p in MODULES.items() if not _is_shim(ast.parse(p.read_text())))
    code = textwrap.dedent(
        f"""
        import importlib, logging, warnings, sys
        import matplotlib, torch
        before = (matplotlib.get_backend(), matplotlib.rcParams.copy(), torch.get_num_threads(),
                  torch.get_default_dtype(), list(logging.getLogger().handlers),
                  logging.getLogger().level, list(warnings.filters), sys.getrecursionlimit())
        for name in {names!r}:
            if name.endswith("__main__"):
                continue
            importlib.import_module(name)
        after = (matplotlib.get_backend(), matplotlib.rcParams.copy(), torch.get_num_threads(),
                 torch.get_default_dtype(), list(logging.getLogger().handlers),
                 logging.getLogger().level, list(warnings.filters), sys.getrecursionlimit())
        labels = ("backend", "rcParams", "threads", "dtype", "handlers", "level", "warnings",
                  "recursion")
        changed = [k for k, a, b in zip(labels, before, after) if a != b]
        print("CHANGED", changed)
        """
    )
    env_run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert env_run.returncode == 0, env_run.stderr[-2000:]
    assert "CHANGED []" in env_run.stdout, env_run.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("leukemia_wbc.evaluation.cross_validation", "leukemia_wbc.experiments.cross_validation"),
        ("leukemia_wbc.evaluation.result", "leukemia_wbc.experiments.result"),
        ("leukemia_wbc.evaluation.predictions", "leukemia_wbc.experiments.predictions"),
        ("leukemia_wbc.evaluation.fold_attributions", "leukemia_wbc.experiments.fold_attributions"),
        ("leukemia_wbc.evaluation.report", "leukemia_wbc.report.html"),
        ("leukemia_wbc.evaluation.figures", "leukemia_wbc.report.figures"),
        ("leukemia_wbc.evaluation.smear", "leukemia_wbc.smear.analysis"),
        ("leukemia_wbc.evaluation.smear_metrics", "leukemia_wbc.smear.metrics"),
        ("leukemia_wbc.evaluation.smear_overlay", "leukemia_wbc.smear.overlay"),
        ("leukemia_wbc.evaluation.detection", "leukemia_wbc.smear.scoring"),
        ("leukemia_wbc.data.smear", "leukemia_wbc.smear.data"),
        ("leukemia_wbc.models.detection", "leukemia_wbc.smear.mask_rcnn"),
        ("leukemia_wbc.models.detections", "leukemia_wbc.smear.detections"),
        ("leukemia_wbc.models.cell_detectors", "leukemia_wbc.smear.detectors"),
        ("leukemia_wbc.tasks.detection", "leukemia_wbc.smear.task"),
    ],
)
def test_old_module_paths_warn_and_forward(old: str, new: str) -> None:
    code = textwrap.dedent(
        f"""
        import importlib, warnings
        new = importlib.import_module({new!r})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = importlib.import_module({old!r})
        assert [w.category for w in caught] == [DeprecationWarning], caught
        assert {new!r} in str(caught[0].message), caught[0].message
        for name in new.__all__:
            assert getattr(old, name) is getattr(new, name), name
        print("OK")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.stdout.strip() == "OK", run.stderr[-1500:]


def test_old_package_names_warn_and_forward() -> None:
    import importlib

    pairs = [
        ("leukemia_wbc.evaluation", "CrossValidator", "leukemia_wbc.experiments"),
        ("leukemia_wbc.evaluation", "write_report", "leukemia_wbc.report"),
        ("leukemia_wbc.evaluation", "SmearAnalyzer", "leukemia_wbc.smear"),
        ("leukemia_wbc.models", "MaskRCNNCellDetector", "leukemia_wbc.smear"),
        ("leukemia_wbc.tasks", "DetectionModule", "leukemia_wbc.smear"),
        ("leukemia_wbc.data", "SyntheticSmear", "leukemia_wbc.smear"),
    ]
    for old, name, new in pairs:
        with pytest.warns(DeprecationWarning, match=rf"{new}\.{name}"):
            got = getattr(importlib.import_module(old), name)
        assert got is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        importlib.import_module("leukemia_wbc.evaluation").NoSuchName  # noqa: B018
