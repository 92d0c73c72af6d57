"""Every subcommand speaks one dialect: jsonargparse, underscored options, ``--config``."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from leukemia_wbc._commands._parser import parse, underscored
from leukemia_wbc._commands.classify import classify_parser, explain_parser
from leukemia_wbc._commands.cv import _parser as cv_parser
from leukemia_wbc._commands.datasets import datasets_parser
from leukemia_wbc._commands.demo import demo_parser
from leukemia_wbc._commands.smear import smear_parser
from leukemia_wbc.cli import main

PARSERS: dict[str, Callable[[], Any]] = {
    "classify": classify_parser,
    "explain": explain_parser,
    "analyze-smear": smear_parser,
    "demo": demo_parser,
    "datasets": datasets_parser,
    "cv": cv_parser,
}
_OPTION = re.compile(r"^(-h|--[a-z0-9_.]+\+?)$")


@pytest.mark.parametrize("command", PARSERS)
def test_options_are_underscored_and_read_from_a_config(command: str) -> None:
    parser = PARSERS[command]()
    options = {s for action in parser._actions for s in action.option_strings}
    assert {"--config", "--print_config"} <= options
    dashed = sorted(o for o in options if not _OPTION.match(o))
    assert not dashed, f"{command}: options not in the underscored dialect: {dashed}"


def test_dashed_spellings_of_earlier_releases_are_still_read() -> None:
    args = parse(classify_parser(), ["m.ckpt", "a.png", "--batch-size", "4", "--on-error=skip"])
    assert (args.batch_size, args.on_error) == (4, "skip")
    args = parse(demo_parser(), ["--unet-epochs", "2", "--no-progress"])
    assert (args.unet_epochs, args.no_progress) == (2, True)


def test_values_and_unknown_options_are_left_as_given() -> None:
    parser = classify_parser()
    assert underscored(["--out", "my-file.csv", "--not-an-option", "--", "--batch-size"],
                       parser) == ["--out", "my-file.csv", "--not-an-option", "--",
                                   "--batch-size"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["demo", "--epochs", "2", "--unet_epochs", "1", "--no_progress"], "epochs", 2),
        (
            [
                "classify",
                "m.ckpt",
                "cells/",
                "--batch_size",
                "8",
                "--method",
                "integrated_gradients",
            ],
            "method",
            "integrated_gradients",
        ),
        (
            ["analyze-smear", "m.ckpt", "smear.png", "--blast_classes", "ALL,AML"],
            "blast_classes",
            "ALL,AML",
        ),
    ],
)
def test_print_config_writes_what_config_reads_back(
    argv: list[str], field: str, value: object, tmp_path: Path
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print_config"]) == 0
    printed = yaml.safe_load(out.getvalue())
    assert printed[field] == value
    config = tmp_path / "options.yaml"
    config.write_text(out.getvalue())
    again = parse(PARSERS[argv[0]](), ["--config", str(config)])
    assert getattr(again, field) == value


def test_a_bad_value_is_one_line_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "m.ckpt", "a.png", "--method", "occlusion"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "method" in err and "'gradcam', 'integrated_gradients'" in err and "occlusion" in err


def test_a_config_key_the_command_lacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text("epochs: 2\nbatch-size: 4\n")
    assert main(["demo", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "batch-size" in err and err.count("\n") == 1
