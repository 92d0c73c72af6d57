"""The package's shape (docs/architecture.md): one-way layers, no cycles, no hidden globals."""

from __future__ import annotations

import ast
import os
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
    "_safe_load": 0,
    "_deprecation": 0,
    "configs": 0,
    "transforms": 1,
    "data": 2,
    "models": 3,
    "tasks": 4,
    "checkpoint": 5,
    "explain": 5,
    "inference": 5,
    "metrics": 5,
    "experiments": 6,
    "evaluation": 7,
    "smear": 7,
    "report": 8,
    "commands": 9,
    "__init__": 10,
}

#: Modules that form one layer together: the ``leukemia-wbc`` command and the demo it runs.
GROUPS = {"_commands": "commands", "demo": "commands", "cli": "commands", "__main__": "commands"}

#: Root modules of one layer that may import each other (the trained model explains itself).
SAME_LAYER_ALLOWED = {("inference", "explain"), ("inference", "checkpoint")}

#: Public-internal root modules that every package may import, private names and all.
SHARED = {"_io", "_safe_load", "_deprecation"}

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
    """The layer group of a module: its top-level package or root module."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return GROUPS.get(top, top)


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
            private_module = any(p.startswith("_") for p in target.split(".")[2:])
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


def _third_party_imports() -> list[str]:
    """Every module outside the package that the package imports (by its full dotted name)."""
    found: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
    return sorted(m for m in found if not m.startswith(("leukemia_wbc", "__future__")))


def test_importing_every_module_changes_no_global_state() -> None:
    """The library's own imports change no global state (its dependencies are imported first:
    some of them, e.g. Lightning and SciPy, add warning filters of their own).

    State is compared after each module, so a failure names the module. Matplotlib starts on
    the ``svg`` backend: on a headless machine the default resolves to ``agg``, which would hide
    a module calling ``matplotlib.use("Agg")``; a last control makes that very call and must be
    seen.
    """
    names = sorted(m for m, p in MODULES.items() if not _is_shim(ast.parse(p.read_text())))
    code = textwrap.dedent(
        f"""
        import importlib, logging, warnings, sys
        for dep in {_third_party_imports()!r}:
            try:
                importlib.import_module(dep)
            except ImportError:  # optional extras (staintools, ...)
                pass
        import matplotlib, torch
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        labels = ("backend", "rcParams", "threads", "dtype", "handlers", "level", "warnings",
                  "recursion", "deterministic")
        def state():
            return (matplotlib.get_backend(), dict(matplotlib.rcParams), torch.get_num_threads(),
                    torch.get_default_dtype(), list(logging.getLogger().handlers),
                    logging.getLogger().level, list(warnings.filters), sys.getrecursionlimit(),
                    torch.are_deterministic_algorithms_enabled())
        def changed(before):
            return [k for k, a, b in zip(labels, before, state()) if a != b]
        before = state()
        found = []
        for name in {names!r}:
            if not name.endswith("__main__"):
                importlib.import_module(name)
                found += [f"{{name}}: {{k}}" for k in changed(before)]
                before = state()
        print("CHANGED", found)
        matplotlib.use("agg")
        print("CONTROL", changed(before))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MPLBACKEND": "svg"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CHANGED []" in run.stdout, run.stdout
    assert "CONTROL ['backend'" in run.stdout, run.stdout  # the check sees matplotlib.use


#: Old module path -> new home (the forwarders of ``_deprecation.moved_module``).
MOVED_MODULES = [
    ("leukemia_wbc.evaluation.cross_validation", "leukemia_wbc.experiments.cross_validation"),
    ("leukemia_wbc.evaluation.result", "leukemia_wbc.experiments.result"),
    ("leukemia_wbc.evaluation.predictions", "leukemia_wbc.experiments.predictions"),
    ("leukemia_wbc.evaluation.fold_attributions", "leukemia_wbc.experiments.fold_attributions"),
    ("leukemia_wbc.evaluation.report", "leukemia_wbc.report.html"),
    ("leukemia_wbc.evaluation.figures", "leukemia_wbc.report.figures"),
    ("leukemia_wbc.evaluation.smear", "leukemia_wbc.smear.analysis"),
    ("leukemia_wbc.evaluation.smear_metrics", "leukemia_wbc.smear.metrics"),
    ("leukemia_wbc.evaluation.smear_overlay", "leukemia_wbc.smear.result"),
    ("leukemia_wbc.evaluation.detection", "leukemia_wbc.smear.scoring"),
    ("leukemia_wbc.data.smear", "leukemia_wbc.smear.data"),
    ("leukemia_wbc.models.detection", "leukemia_wbc.smear.mask_rcnn"),
    ("leukemia_wbc.models.detections", "leukemia_wbc.smear.detections"),
    ("leukemia_wbc.models.cell_detectors", "leukemia_wbc.smear.detectors"),
    ("leukemia_wbc.tasks.detection", "leukemia_wbc.smear.task"),
]


def test_old_module_paths_warn_and_forward() -> None:
    code = textwrap.dedent(
        f"""
        import importlib, warnings
        for old_name, new_name in {MOVED_MODULES!r}:
            new = importlib.import_module(new_name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                old = importlib.import_module(old_name)
            assert [w.category for w in caught] == [DeprecationWarning], (old_name, caught)
            assert new_name in str(caught[0].message), caught[0].message
            for name in new.__all__:
                assert getattr(old, name) is getattr(new, name), (old_name, name)
        print("OK")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
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
        ("leukemia_wbc.evaluation.gallery", "write_fold_attributions", "leukemia_wbc.experiments"),
        ("leukemia_wbc.inference", "TASK_KEY", "leukemia_wbc.checkpoint"),
    ]
    for old, name, new in pairs:
        with pytest.warns(DeprecationWarning, match=rf"{new}\.{name}"):
            got = getattr(importlib.import_module(old), name)
        assert got is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        importlib.import_module("leukemia_wbc.evaluation").NoSuchName  # noqa: B018


def test_only_the_fold_model_adapters_tell_fold_models_apart() -> None:
    """No module but the fold-model adapters picks a path by the SVM's type, a suffix or a name.

    Elsewhere code asks ``FoldModel.info`` (DESIGN.md, "Fold models"). Docstrings and
    ``__all__`` lists are not code paths and are not searched.
    """
    allowed = {
        "experiments/fold_model.py",
        "experiments/_fold_lightning.py",
        "experiments/_fold_sklearn.py",
        "models/colour_baseline.py",
    }

    def offences(source: str, where: str) -> list[str]:
        tree = ast.parse(source)
        skip: set[int] = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                skip.add(id(body[0].value))  # a docstring
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", "") == "__all__" for t in node.targets
            ):
                skip |= {id(n) for n in ast.walk(node.value)}
        found = []
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "isinstance"
                and len(node.args) == 2
            ):
                names = {getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node.args[1])}
                if "HandcraftedSVM" in names:
                    found.append(f"{where}:{node.lineno} isinstance(..., HandcraftedSVM)")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                found += [
                    f"{where}:{node.lineno} {needle!r}"
                    for needle in (".joblib", "ColourShortcutBaseline")
                    if needle in node.value
                ]
        return found

    sample = (
        'isinstance(m, (HandcraftedSVM, int))\nf"{d}/model.joblib"\nk = "ColourShortcutBaseline"'
    )
    assert len(offences(sample, "sample")) == 3  # the check finds each kind
    wrong = []
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in allowed and not rel.startswith("models/handcrafted"):
            wrong += offences(path.read_text(), rel)
    assert wrong == []


def _moved_names() -> dict[tuple[str, str], str]:
    """(old module, name) -> new home, read from the forwarders of ``moved_names``."""
    import importlib

    found: dict[tuple[str, str], str] = {}
    for module, path in MODULES.items():
        if "moved_names(" not in path.read_text():
            continue
        hook = importlib.import_module(module).__dict__.get("__getattr__")
        for cell in getattr(hook, "__closure__", None) or ():
            if isinstance(cell.cell_contents, dict):
                found |= {(module, k): v for k, v in cell.cell_contents.items()}
    return found


def test_the_library_uses_no_deprecated_path() -> None:
    moved = _moved_names()
    assert ("leukemia_wbc.evaluation", "CrossValidator") in moved  # the map is read
    shims = {m for m, p in MODULES.items() if _is_shim(ast.parse(p.read_text()))}
    wrong = []
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target in shims:
                wrong.append(f"{where} imports the deprecated module {target}")
            wrong += [f"{where} {target}.{n}" for n in names if (target, n) in moved]
    assert wrong == []
