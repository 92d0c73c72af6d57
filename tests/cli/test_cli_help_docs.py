"""The options documented in ``docs/cli.md`` are the parsers' own ``--help`` output.

Each ```` ```text ```` block of ``docs/cli.md`` that starts with ``$ leukemia-wbc ... --help``
holds that command's help as printed at ``COLUMNS=100``; an excerpt (the first line says
``# excerpt``) holds pieces that must each appear in it (``...`` marks a cut). After changing
an option, rewrite the blocks with::

    python tests/cli/test_cli_help_docs.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from leukemia_wbc.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
_BLOCK = re.compile(r"```text\n(\$ leukemia-wbc [^\n]*--help[^\n]*)\n(.*?)```", re.S)
#: Every command whose options a user types; each must have its help in docs/cli.md.
COMMANDS = [
    "cv",
    "pretrain",
    "classify",
    "explain",
    "analyze-smear",
    "datasets",
    "datasets verify",
    "demo",
]


def help_text(command_line: str) -> str:
    """What ``leukemia-wbc ...`` prints at ``COLUMNS=100`` (``command_line`` after ``$ ``)."""
    argv = shlex.split(command_line.split("#")[0])[1:]
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = main(argv)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert status == 0, f"{command_line} exited with {status}"
    return out.getvalue()


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1)[2:], m.group(2)) for m in _BLOCK.finditer(text)]


def _squeeze(text: str) -> str:
    """The words of a help text, wrapping and the list of known subclasses left out.

    jsonargparse lists the subclasses of a type that happen to be imported, which depends on
    what the process imported before (another test's model, a plugin), not on the parser.
    """
    words = " ".join(text.split())
    return re.sub(r"known subclasses: [^)]*\)", "known subclasses: ...)", words)


def test_every_command_has_its_help_documented() -> None:
    documented = {" ".join(shlex.split(c.split("#")[0])[1:-1]) for c, _ in _blocks(DOC.read_text())}
    missing = [c for c in COMMANDS if c not in documented]
    assert not missing, f"docs/cli.md has no `$ leukemia-wbc COMMAND --help` block for {missing}"


@pytest.mark.parametrize("command", [c for c, _ in _blocks(DOC.read_text())])
def test_documented_help_is_the_parsers_help(command: str) -> None:
    documented = dict(_blocks(DOC.read_text()))[command]
    actual = help_text(command)
    if "# excerpt" in command:
        pieces = [p.strip() for p in _squeeze(documented).split("...") if p.strip()]
        stale = [p for p in pieces if p not in _squeeze(actual)]
        assert not stale, f"docs/cli.md `{command}`: not in the help: {stale[0][:200]!r}"
    else:
        assert _squeeze(documented) == _squeeze(actual), (
            f"docs/cli.md `{command}` differs from the parser's help; rewrite it with "
            "`python tests/cli/test_cli_help_docs.py`"
        )


def test_a_changed_option_is_caught() -> None:
    """The comparison fails when the documented help and the parser differ (here: an option)."""
    text = DOC.read_text()
    command, documented = next(b for b in _blocks(text) if b[0].startswith("leukemia-wbc demo"))
    assert "--unet_epochs" in documented
    changed = documented.replace("--unet_epochs", "--unet-epochs")
    assert _squeeze(changed) != _squeeze(help_text(command))


def rewrite(path: Path = DOC) -> int:
    """Replace every full (not excerpt) help block of ``path`` with the current output."""
    text = path.read_text()
    changed = 0

    def fresh(match: re.Match[str]) -> str:
        nonlocal changed
        command = match.group(1)[2:]
        if "# excerpt" in command:
            return match.group(0)
        body = help_text(command).rstrip() + "\n"
        changed += body != match.group(2)
        return f"```text\n{match.group(1)}\n{body}```"

    path.write_text(_BLOCK.sub(fresh, text))
    return changed


if __name__ == "__main__":
    print(f"{rewrite()} help block(s) of {DOC} rewritten", file=sys.stderr)
