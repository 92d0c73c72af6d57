"""The README's code runs: every Python block, and every shell line is run or accounted for.

Python blocks (```` ```python ````) are executed as written, each in a fresh folder, offline
(``HF_HUB_OFFLINE=1``); an exception fails the test with the block's place in the README.

Shell blocks (```` ```bash ````, ```` ```console ````): a cheap ``leukemia-wbc`` line is run here
through :func:`leukemia_wbc.cli.main`; every other ``leukemia-wbc`` line must have a runner in
``tests/cli/test_documented_commands.py`` (which runs it at toy size); any other line (``pip``,
``pytest``) must be listed in :data:`NOT_RUN_HERE` with where it is covered, and the test
command must be the one ``.ci/run`` runs.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from leukemia_wbc.cli import config_names, main
from tests.cli.test_documented_commands import NOT_RUN, RUNNERS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_SCRIPT = REPO / ".ci" / "run"

_FENCE = re.compile(r"^(`{3,})\s*(\w*)\s*$")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")

#: Shell lines of the README that are not run here, and what covers them.
NOT_RUN_HERE = {
    "pip install . && leukemia-wbc demo": (
        "installs the package (CI installs it with the dev extra); the demo runs at toy size in "
        "tests/cli/test_cli.py::test_demo_smoke_run and `demo --out runs/demo` in "
        "tests/cli/test_documented_commands.py"
    ),
    'pip install -e ".[dev]" && pytest': "the test command: .ci/run runs it (checked below)",
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu": (
        "downloads PyTorch's CPU build (network)"
    ),
    "pip install .": "installs the package (CI installs it with the dev extra)",
}
#: The README's test command, which .ci/run must run unchanged.
TEST_COMMAND = 'pip install -e ".[dev]" && pytest'
#: ``leukemia-wbc`` lines cheap enough to run here (the key: arguments joined by one space).
CHEAP = {"configs", "datasets", "--help"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README.

    Attributes:
        language: The info string's first word (``python``, ``bash``, ...).
        line: Line number of its first code line.
        code: Its text.
    """

    language: str
    line: int
    code: str


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i].strip())
        if not opened:
            i += 1
            continue
        fence, language, start = opened[1], opened[2].lower(), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        found.append(Block(language, start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return found


def _uncomment(text: str) -> str:
    """``text`` without a trailing shell comment (a ``#`` after a blank, outside quotes)."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """The command lines of a shell block, as written: continuations joined, comments dropped.

    In a ``console`` block only ``$`` lines are commands (the rest is their output).
    """
    out: list[tuple[int, str]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        start, text = i, lines[i].strip()
        i += 1
        if block.language == "console":
            if not text.startswith("$ "):
                continue
            text = text[2:].strip()
        while text.endswith("\\") and i < len(lines):
            text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        text = _uncomment(text)
        if text:
            out.append((block.line + start, text))
    return out


README_BLOCKS = blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in README_BLOCKS if b.language == "python"]
SHELL = [
    (line, text)
    for b in README_BLOCKS
    if b.language in ("bash", "sh", "shell", "console")
    for line, text in shell_lines(b)
]


def _key(text: str) -> str:
    """The arguments of a ``leukemia-wbc`` line after the program name."""
    return " ".join(shlex.split(text)[1:])


# -- the blocks are found -------------------------------------------------------------------------


def test_blocks_are_found() -> None:
    """The extraction sees the README's snippets (an empty list would make the tests vacuous)."""
    assert PYTHON, "no ```python block in README.md"
    assert any(text.startswith("leukemia-wbc ") for _, text in SHELL)
    assert TEST_COMMAND in [text for _, text in SHELL]


def test_extraction_of_blocks_and_shell_lines() -> None:
    text = (
        "Prose `leukemia-wbc x`.\n\n```python\nx = 1\n```\n\n```bash\n"
        "leukemia-wbc cv --config demo \\\n    --folds '[3]'  # one fold\n# a comment\n```\n"
    )
    found = blocks(text)
    assert [(b.language, b.line) for b in found] == [("python", 4), ("bash", 8)]
    assert found[0].code == "x = 1\n"
    assert shell_lines(found[1]) == [(8, "leukemia-wbc cv --config demo --folds '[3]'")]
    shown = Block("console", 1, "$ leukemia-wbc configs\ndemo   the demo\n$ pip install .\n")
    assert shell_lines(shown) == [(1, "leukemia-wbc configs"), (3, "pip install .")]
    assert _uncomment('echo "a # b"  # c') == 'echo "a # b"'


# -- Python ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", PYTHON, ids=[f"README.md:{b.line}" for b in PYTHON])
def test_python_block_runs(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Each Python block runs as written in an empty folder, offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    _check_outcome(namespace, capsys.readouterr().out)


def _check_outcome(namespace: dict[str, object], printed: str) -> None:
    """What the README's example says it makes: class probabilities of the new cells."""
    import torch

    probs = namespace.get("probs")
    if probs is None:
        return
    assert isinstance(probs, torch.Tensor)
    classes = namespace["trained"].classes  # type: ignore[attr-defined]
    assert probs.shape == (4, len(classes)) == (4, 4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-5)
    assert str(classes) in printed


# -- shell ----------------------------------------------------------------------------------------


def test_every_shell_line_is_run_or_covered() -> None:
    """A ``leukemia-wbc`` line is cheap or has a runner; any other line is listed here."""
    problems = []
    for line, text in SHELL:
        if text.startswith("leukemia-wbc "):
            key = _key(text)
            if key not in CHEAP and key not in RUNNERS:
                why = f" (not run: {NOT_RUN[key]})" if key in NOT_RUN else ""
                problems.append(f"README.md:{line}: `{text}` is run by no test{why}")
        elif text not in NOT_RUN_HERE:
            problems.append(f"README.md:{line}: `{text}` is neither run nor in NOT_RUN_HERE")
    assert not problems, "\n".join(problems)
    stale = set(NOT_RUN_HERE) - {text for _, text in SHELL}
    assert not stale, f"NOT_RUN_HERE lists lines the README no longer has: {stale}"


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines()]
    assert TEST_COMMAND in ci_lines, f"{CI_SCRIPT} no longer runs `{TEST_COMMAND}`"


@pytest.mark.parametrize(
    "text",
    [t for _, t in SHELL if t.startswith("leukemia-wbc ") and _key(t) in CHEAP],
)
def test_cheap_command_runs(text: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(shlex.split(text)[1:])
    assert code == 0, err.getvalue()[-2000:]
    if _key(text) == "configs":
        assert [line.split()[0] for line in out.getvalue().splitlines() if line.strip()] == (
            config_names()
        )
    else:
        assert out.getvalue().strip()


# -- links and size -------------------------------------------------------------------------------


def test_relative_links_point_to_files() -> None:
    text = README.read_text(encoding="utf-8")
    targets = {t for t in _LINK.findall(text) if "://" not in t}
    assert targets, "no relative link found: is the pattern broken?"
    missing = sorted(t for t in targets if not (REPO / t).exists())
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_stays_short() -> None:
    """Measurements and guides belong in docs/ (docs/benchmarks.md lists every measurement)."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"README.md has {lines} lines; move details into docs/"
