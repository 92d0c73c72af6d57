"""Every ``leukemia-wbc`` command line of the README and the docs runs, or is listed as not run.

The command lines are read from the fenced code blocks of ``README.md`` and ``docs/*.md``
(``leukemia-wbc ...`` in shell blocks, ``$ leukemia-wbc ...`` in output blocks; continuation
lines joined, comments dropped). Each one is run through :func:`leukemia_wbc.cli.main` in a
fresh folder, as documented, with only:

* a real dataset path (``/data/C-NMC_Leukemia``, ...) replaced by the fake tree of that dataset
  in the real layout (``tests/data/<name>/data.py``);
* small overrides appended (tiny backbones, 32 px, few images, one epoch), which win over the
  documented values because they come last;
* the files the line takes as given (``model.ckpt``, ``cells/``, ``other_lab.yaml``, ...)
  written first, the model by the documented ``fit`` line itself.

A documented line that no runner below covers fails :func:`test_every_documented_command_is_run`
with its file and line; a line that cannot run here must be listed in :data:`NOT_RUN` with the
reason.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from leukemia_wbc.cli import config_names, main
from tests.cli._layouts import (
    CLASSES,
    MODEL_NAMES,
    MODEL_OVERRIDES,
    SIZE,
    check_cv_output,
    check_fold,
    check_predictions_csv,
    quick_data,
)
from tests.conftest import make_fixture

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")
_COMMAND = re.compile(r"^(?:\$\s+)?(?:leukemia-wbc|python -m leukemia_wbc)(?:\s|$)")
_OPTION = re.compile(r"(?<![\w-])--?[a-zA-Z][\w.-]*")


@dataclass(frozen=True)
class DocCommand:
    """One documented command line.

    Attributes:
        where: ``file:line`` of its first line.
        text: The line as written (continuation lines joined).
        argv: Its arguments after the program name.
        output: The output documented below it (in an output block), one string per line.
    """

    where: str
    text: str
    argv: tuple[str, ...]
    output: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The command without the program name, arguments separated by one space."""
        return " ".join(self.argv)


def documented_commands(paths: list[Path] = DOCUMENTS) -> list[DocCommand]:
    """The ``leukemia-wbc`` command lines of the fenced code blocks of ``paths``.

    Python blocks are skipped (they call the library, not the command). In an output block
    (``text``, ``console``) only ``$``-prefixed lines are commands; the lines after a ``$`` line,
    up to the next one or the end of the block, are its documented output.
    """
    found: list[DocCommand] = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        fence: str | None = None
        language, indent = "", 0
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            opened = _FENCE.match(lines[i])
            if fence is None:
                if opened:
                    fence, language = opened[1], opened[2].lower()
                    indent = len(lines[i]) - len(lines[i].lstrip())
                i += 1
                continue
            if line.startswith(fence) and not line.strip(fence[0]):
                fence = None
                i += 1
                continue
            shown = language in ("text", "console")  # output blocks: commands start with $
            if language == "python" or not _COMMAND.match(line) or (shown and line[0] != "$"):
                i += 1
                continue
            start, text = i, line
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            output: list[str] = []
            if text.startswith("$"):
                j = i + 1
                while j < len(lines) and not lines[j].strip().startswith("$ "):
                    if _FENCE.match(lines[j]):
                        break
                    output.append(lines[j][indent:].rstrip())
                    j += 1
            words = shlex.split(text.removeprefix("$").strip(), comments=True)
            argv = words[3:] if words[:2] == ["python", "-m"] else words[1:]
            name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
            where = f"{name}:{start + 1}"
            found.append(DocCommand(where, text, tuple(argv), tuple(output)))
            i += 1
    return found


# -- running the command -----------------------------------------------------------------------


@dataclass
class Result:
    """Exit status and captured output of one in-process run of the command."""

    code: int
    out: str
    err: str

    def ok(self) -> Result:
        """Assert success (the message shows the end of stderr); return self."""
        assert self.code == 0, self.err[-3000:]
        return self


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run the body in ``folder`` (``contextlib.chdir`` is Python 3.11+)."""
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def cli(argv: list[str]) -> Result:
    """Run ``leukemia-wbc argv`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Result(code, out.getvalue(), err.getvalue())


#: Real dataset paths of the docs -> the fixture generator of that dataset (with its options).
FAKE_DATASETS: dict[str, tuple[str, dict[str, object]]] = {
    "/data/C-NMC_Leukemia": ("cnmc", {}),
    "/data/segmentation_WBC": ("segmentation_wbc", {}),
    "/data/ALL_IDB": ("allidb", {}),
}


def substitute(argv: tuple[str, ...], folder: Path) -> list[str]:
    """``argv`` with each real dataset path replaced by a fake tree written under ``folder``."""
    out = []
    for arg in argv:
        if arg.startswith("/data/"):
            assert arg in FAKE_DATASETS, f"no fake layout for the documented path {arg}"
            name, options = FAKE_DATASETS[arg]
            arg = str(make_fixture(name, folder / "fake" / name, **options))
        out.append(arg)
    return out


QUIET_CV = [
    "--cv.max_epochs", "1",
    "--cv.trainer_kwargs", "{enable_progress_bar: false, enable_model_summary: false}",
]  # fmt: skip
QUIET_FIT = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false"]  # fmt: skip
#: Overrides of the documented ``fit --model DualBranchClassifier`` line (LightningCLI names).
TINY_DUAL_FIT = [
    "--model.cell_backbone", "resnet10t", "--model.nucleus_backbone", "mobilenetv3_small_050",
    "--model.nucleus_size", str(SIZE), "--model.fusion_features", "16", "--model.head_hidden",
    "[8]", "--data.dataset.n", "24", "--data.size", str(SIZE), "--data.batch_size", "8",
    *QUIET_FIT,
]  # fmt: skip
SYNTHETIC_CLASSES = CLASSES["synthetic"]


def write_cells(folder: Path, n: int, *, prefix: str = "cell", suffix: str = ".png") -> list[Path]:
    """``n`` SyntheticWBC cells as image files ``<prefix>_<i><suffix>`` (no masks beside them)."""
    from PIL import Image

    from leukemia_wbc.data import SyntheticWBC

    folder.mkdir(parents=True, exist_ok=True)
    cells = SyntheticWBC(n, size=48, seed=5)
    paths = []
    for i in range(n):
        paths.append(folder / f"{prefix}_{i}{suffix}")
        Image.fromarray(cells.render(i)[0]).save(paths[-1])
    return paths


@dataclass
class Shared:
    """Results that several documented lines use, each made once (by a documented line)."""

    folder: Path
    commands: list[DocCommand]
    _checkpoints: list[Path] | None = None
    _paper_cv: tuple[Result, list[str], Path] | None = None

    def command(self, key: str) -> DocCommand:
        """The first documented line with this key (which makes what others take as given)."""
        found = [c for c in self.commands if c.key == key]
        assert found, f"`leukemia-wbc {key}` is no longer documented; the other lines used it"
        return found[0]

    def model_checkpoint(self) -> Path:
        """The dual-branch checkpoint the documented ``fit`` line writes (tiny and 1 epoch)."""
        if self._checkpoints is None:
            folder = self.folder / "fit"
            folder.mkdir()
            with working_directory(folder):
                cmd = self.command(FIT_DUAL)
                cli([*cmd.argv, *TINY_DUAL_FIT, "--trainer.default_root_dir", "."]).ok()
            self._checkpoints = sorted(folder.rglob("*.ckpt"))
        assert len(self._checkpoints) == 1, self._checkpoints
        return self._checkpoints[0]

    def paper_cv(self) -> tuple[Result, list[str], Path]:
        """The documented one-fold job (fold 3), then the other three folds as other jobs.

        Returns:
            The fold-3 run, the files of the output folder right after it, the folder.
        """
        if self._paper_cv is None:
            folder = self.folder / "paper_cv"
            folder.mkdir()
            cmd = self.command(CV_ONE_FOLD)
            args = [*substitute(cmd.argv, folder), *MODEL_OVERRIDES["paper_dual_branch"],
                    *quick_data(), "--cv.n_splits", "4", *QUIET_CV]  # fmt: skip
            with working_directory(folder):
                first = cli(args)
                out = folder / "runs" / "paper_dual_branch"
                after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
                cli([*args, "--folds", "[0,1,2]"]).ok()
            self._paper_cv = (first, after, out)
        return self._paper_cv


# -- one runner per documented command ---------------------------------------------------------

Runner = Callable[[DocCommand, Path, Shared], None]
RUNNERS: dict[str, Runner] = {}
#: Keys of the runners too long for the fast suite (run with ``-m slow``).
SLOW: set[str] = set()
#: Documented lines that are not run, with the reason (none at present; add one here, never
#: skip silently).
NOT_RUN: dict[str, str] = {}

FIT_DUAL = ("fit --model DualBranchClassifier --data WBCDataModule --data.dataset SyntheticWBC "
            "--trainer.max_epochs 5")  # fmt: skip
CV_ONE_FOLD = ("cv --config paper_dual_branch --config cnmc2019 --data.dataset.init_args.root "
               "/data/C-NMC_Leukemia --folds [3]")  # fmt: skip


def runs(key: str, *, slow: bool = False) -> Callable[[Runner], Runner]:
    """Register the runner of the documented command ``key``."""

    def register(runner: Runner) -> Runner:
        assert key not in RUNNERS, key
        RUNNERS[key] = runner
        if slow:
            SLOW.add(key)
        return runner

    return register


def _check_documented_output(cmd: DocCommand, result: Result) -> None:
    """The documented output still holds: its usage line and options, or its listed lines."""
    actual = result.out.splitlines()
    if cmd.output and cmd.output[0].startswith("usage:"):
        program = cmd.output[0].split("[")[0].split()
        assert actual[0].split()[: len(program)] == program, (cmd.where, actual[0])
        gone = set(_OPTION.findall("\n".join(cmd.output))) - set(_OPTION.findall(result.out))
        assert not gone, f"{cmd.where}: documented options the command no longer has: {gone}"
    else:
        missing = [line for line in cmd.output if line.strip() and line not in actual]
        assert not missing, f"{cmd.where}: documented output lines not printed: {missing}"


def _run_help(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "100")  # as the docs were produced
        result = cli(list(cmd.argv)).ok()
    assert result.out.startswith("usage: leukemia-wbc")
    _check_documented_output(cmd, result)


for _key in ("--help", "cv --help", "pretrain --help", "classify --help", "explain --help",
             "analyze-smear --help", "datasets --help", "datasets verify --help",
             "demo --help"):  # fmt: skip
    runs(_key)(_run_help)


@runs("fit --help")
def _run_fit_help(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """Lightning's help runs; the excerpt's content is checked by ``test_cli_help_docs.py``."""
    result = cli(list(cmd.argv)).ok()
    assert "--model.help" in result.out and "--data.help" in result.out


@runs("configs")
def _run_configs(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    result = cli(list(cmd.argv)).ok()
    listed = [line.split()[0] for line in result.out.splitlines() if line.strip()]
    assert listed == config_names()
    _check_documented_output(cmd, result)


@runs("datasets")
def _run_datasets(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    result = cli(list(cmd.argv)).ok()
    assert "cnmc2019 (CNMC2019)" in result.out and "source:" in result.out
    _check_documented_output(cmd, result)


@runs("datasets verify cnmc2019 /data/C-NMC_Leukemia")
def _run_verify_cnmc(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    args = substitute(cmd.argv, tmp)
    result = cli(args).ok()
    lines = result.out.splitlines()
    assert lines[0] == f"CNMC2019 at {args[-1]}: 16 images, 8 groups, masks: no"
    assert [line.split() for line in lines[1:]] == [
        ["hem", "6"],
        ["all", "10"],
        ["decoded:", "all", "16", "images", "readable"],
    ]


@runs("datasets verify segmentation_wbc /data/segmentation_WBC")
def _run_verify_segmentation(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    args = substitute(cmd.argv, tmp)
    result = cli(args).ok()
    lines = result.out.splitlines()
    assert lines[0] == f"SegmentationWBC2018 at {args[-1]}: 10 images, 10 groups, masks: yes"
    # the documented counts are those of the real release; the class rows are the same
    assert [line.split()[0] for line in lines[1:]] == [
        line.split()[0] for line in cmd.output[1:] if line.strip()
    ]
    assert lines[-1] == "decoded: all 10 images readable"


@runs(FIT_DUAL)
def _run_fit_dual(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    from leukemia_wbc.inference import TrainedModel

    checkpoint = shared.model_checkpoint()
    model = TrainedModel.from_checkpoint(checkpoint, device="cpu")
    assert model.classes == SYNTHETIC_CLASSES  # taken from the data
    assert type(model.task).__name__ == "DualBranchClassifier"


@runs(
    "fit --config segmentation_unet --data.init_args.dataset.init_args.root /data/segmentation_WBC"
)
def _run_fit_unet(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    import torch

    args = [*substitute(cmd.argv, tmp), "--model.init_args.encoder", "tu-mobilenetv2_050",
            "--data.init_args.size", str(SIZE), "--data.init_args.batch_size", "4",
            "--trainer.default_root_dir", str(tmp), *QUIET_FIT]  # fmt: skip
    cli(args).ok()
    checkpoint = tmp / "runs" / "segmentation_unet" / "unet.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["arch"] == "unet"


TWO_STAGE_FIT = (
    "fit --config segmentation_unet --data.init_args.dataset.init_args.root "
    "/data/segmentation_WBC --data.init_args.dataset.init_args.subset Dataset 1"
)
TWO_STAGE_CV = ("cv --config paper_dual_branch --config segmentation_wbc "
                "--data.dataset.init_args.root /data/segmentation_WBC "
                "--data.dataset.init_args.subset Dataset 2 --cv.n_splits 3 "
                "--model.init_args.segmenter runs/segmentation_unet/unet.ckpt "
                "--model.init_args.mask_source segmenter")  # fmt: skip


def _two_stage_unet(shared: Shared, tmp: Path) -> Path:
    """The documented U-Net stage at 32 px, one epoch, on a fake tree with 6 cells per class."""
    cmd = shared.command(TWO_STAGE_FIT)
    root = make_fixture("segmentation_wbc", tmp / "fake", min_per_class=6)
    args = [root.as_posix() if a == "/data/segmentation_WBC" else a for a in cmd.argv]
    cli([*args, "--model.init_args.encoder", "tu-mobilenetv2_050", "--data.init_args.size",
         str(SIZE), "--data.init_args.batch_size", "4", "--trainer.default_root_dir", str(tmp),
         *QUIET_FIT]).ok()  # fmt: skip
    checkpoint = tmp / "runs" / "segmentation_unet" / "unet.ckpt"
    assert checkpoint.is_file()
    return root


@runs(TWO_STAGE_FIT)
def _run_two_stage_fit(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    import torch

    _two_stage_unet(shared, tmp)
    saved = torch.load(tmp / "runs" / "segmentation_unet" / "unet.ckpt", map_location="cpu",
                       weights_only=True)  # fmt: skip
    assert saved["hyper_parameters"]["arch"] == "unet"


# slow: the U-Net as the paper config's segmenter is checked fast by
# test_packaged_configs.py::test_unet_checkpoint_is_the_segmenter_of_the_paper_config
@runs(TWO_STAGE_CV, slow=True)
def _run_two_stage_cv(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """The fake Dataset 2 is too small for 3 folds: the fake's Dataset 1 (6 cells per class)."""
    root = _two_stage_unet(shared, tmp)
    args = [root.as_posix() if a == "/data/segmentation_WBC" else a for a in cmd.argv]
    out = tmp / "runs" / "paper_dual_branch"
    tiny = [*MODEL_OVERRIDES["paper_dual_branch"], *quick_data(), *QUIET_CV]
    cli([*args, "--data.dataset.init_args.subset", "Dataset 1", *tiny]).ok()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hparams"]["segmenter"] == "runs/segmentation_unet/unet.ckpt"
    assert config["model"]["hparams"]["mask_source"] == "segmenter"
    check_fold(out / "fold_0", CLASSES["segmentation_wbc"])


@runs(
    "fit --model CellClassifier --model.init_args.backbone resnet50 --model.init_args.weights "
    "resnet50_imagenet.pth --model.init_args.optim.scheduler onecycle --data WBCDataModule "
    "--data.dataset SyntheticWBC --trainer.max_epochs 20"
)
def _run_fit_with_local_weights(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """The local weights file is a (random) ResNet-10t, the backbone the test swaps in."""
    import timm
    import torch

    weights = timm.create_model("resnet10t", num_classes=0).state_dict()
    torch.save(weights, tmp / "resnet50_imagenet.pth")
    args = [
        *cmd.argv, "--model.init_args.backbone", "resnet10t", "--model.init_args.head_hidden",
        "[8]", "--data.dataset.n", "24", "--data.size", str(SIZE), "--data.batch_size", "8",
        "--trainer.default_root_dir", str(tmp), *QUIET_FIT,
    ]  # fmt: skip
    cli(args).ok()
    (checkpoint,) = tmp.rglob("*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    # the trained stem is the file's (moved by one epoch), not a new random initialisation
    name = next(k for k, v in weights.items() if v.ndim == 4)
    (trained,) = [v for k, v in state.items() if k.endswith("." + name)]
    fresh = timm.create_model("resnet10t", num_classes=0).state_dict()[name]
    moved = (trained - weights[name]).abs().mean()
    assert moved < 0.2 * (fresh - weights[name]).abs().mean()


@runs(
    "fit --model DetectionModule --data SmearDataModule --data.dataset.n 200 "
    "--trainer.max_epochs 12"
)
def _run_fit_detector(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """Six 96 px fields of six patients, a narrow network, one epoch (a few seconds)."""
    import torch

    from leukemia_wbc.smear import DETECTION_OPTIM, DetectionModule

    args = [
        *cmd.argv, "--model.init_args.box_head_size", "32", "--model.init_args.mask_head_layers",
        "[16]", "--data.dataset.n", "6", "--data.dataset.size", "96", "--data.dataset.n_patients",
        "6", "--data.dataset.cells_per_field", "[1, 2]", "--data.val_fraction", "0.34",
        "--trainer.default_root_dir", str(tmp), *QUIET_FIT,
    ]  # fmt: skip
    cli(args).ok()
    (checkpoint,) = tmp.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["optim"] == DETECTION_OPTIM.to_dict()
    module = DetectionModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert module.box_head_size == 32 and module.detector().score_threshold == 0.5


@runs(CV_ONE_FOLD)
def _run_cv_one_fold(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    first, after, out = shared.paper_cv()
    first.ok()
    assert re.search(r"^\| 3 \| 4 \|", first.out, re.MULTILINE), first.out  # fold 3, 4 images
    assert "report:" not in first.out
    assert "fold_3/fold.json" in after and not any(f.startswith("fold_0/") for f in after)
    assert "report/report.html" not in after
    check_fold(out / "fold_3", ("hem", "all"))


@runs("cv --collect runs/paper_dual_branch")
def _run_collect(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    _, _, out = shared.paper_cv()
    with working_directory(out.parents[1]):
        result = cli(list(cmd.argv)).ok()
    assert "| 95 % CI (4 folds: rough) |" in result.out
    check_cv_output(out, MODEL_NAMES["paper_dual_branch"], ("hem", "all"), n_splits=4)
    with (out / "predictions.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 16  # every image of the fake C-NMC, once


@runs("cv --config demo")
def _run_cv_demo(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    args = [*cmd.argv, "--data.dataset.init_args.n", "24", *MODEL_OVERRIDES["demo"],
            *quick_data(batch_size=8), *QUIET_CV]  # fmt: skip
    cli(args).ok()
    check_cv_output(tmp / "runs" / "demo", MODEL_NAMES["demo"], SYNTHETIC_CLASSES, n_splits=3)


PRETRAIN_FOLDER = ("pretrain --model.backbone resnet18 --data.dataset UnlabelledImages "
                   "--data.dataset.root cells/ --output_dir runs/pretrain")  # fmt: skip
QUICK_PRETRAIN = ["--model.backbone", "resnet10t", "--model.hidden_dim", "32",
                  "--max_epochs", "1", "--no_progress", *quick_data(batch_size=4)]  # fmt: skip


@runs(PRETRAIN_FOLDER)
def _run_pretrain_folder(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    write_cells(tmp / "cells", 4)
    result = cli([*cmd.argv, *QUICK_PRETRAIN]).ok()
    weights = Path("runs") / "pretrain" / "backbone.pt"
    assert f"weights: {weights}" in result.out and "on 4 cells" in result.out
    assert (weights.parent / "pretrain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli([*cmd.argv, *QUICK_PRETRAIN])  # a finished run is never replaced
    assert again.code == 1 and "backbone.pt exists" in again.err and "--overwrite" in again.err


@runs(
    "pretrain --model.backbone resnet18 --data.dataset SegmentationWBC2018 --data.dataset.root "
    "/data/segmentation_WBC --data.size 128 --data.fold 0 --data.n_splits 5 --max_epochs 100 "
    "--output_dir runs/pretrain_fold0"
)
def _run_pretrain_dataset(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    result = cli([*substitute(cmd.argv, tmp), *QUICK_PRETRAIN, "--data.n_splits", "3"]).ok()
    summary = json.loads((tmp / "runs" / "pretrain_fold0" / "pretrain.json").read_text())
    assert summary["excluded"] > 0 and f"{summary['excluded']} test cells left out" in result.out


@runs("cv --config demo --pretrain_epochs 60 --pretrain.backbone resnet10t")
def _run_cv_pretrain(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    args = [*cmd.argv, "--data.dataset.init_args.n", "24", *MODEL_OVERRIDES["demo"],
            *quick_data(batch_size=8), *QUIET_CV, "--pretrain_epochs", "1",
            "--pretrain.hidden_dim", "32", "--folds", "[0]", "--report", "false"]  # fmt: skip
    cli(args).ok()
    fold = tmp / "runs" / "demo" / "fold_0"
    assert (fold / "pretrain" / "backbone.pt").is_file()
    summary = json.loads((fold / "pretrain" / "pretrain.json").read_text())
    with (fold / "predictions.csv").open(newline="") as fh:
        held_out = len(list(csv.DictReader(fh)))
    # the fold's pretraining saw its training and validation cells, never its held-out ones
    assert summary["excluded"] == held_out > 0
    assert summary["train_samples"] + summary["val_samples"] + held_out == 24


@runs(
    "cv --config demo --config recipe_grayscale --robustness true --test_data other_lab.yaml "
    "--test_class_map {basophil: null}"
)
def _run_cv_shift_tests(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """``other_lab.yaml``: a class-folder tree with the model's classes and one more."""
    for name in (*SYNTHETIC_CLASSES, "basophil"):
        write_cells(tmp / "other_lab" / name, 2, prefix=name)
    (tmp / "other_lab.yaml").write_text(
        "data:\n  dataset:\n    class_path: leukemia_wbc.data.ImageFolderWBC\n"
        "    init_args:\n      root: other_lab\n  size: 32\n"
    )
    args = [*cmd.argv, "--data.dataset.init_args.n", "24", *MODEL_OVERRIDES["demo"],
            *quick_data(batch_size=8), *QUIET_CV, "--robustness-strengths", "[1.0]"]  # fmt: skip
    result = cli(args).ok()
    out = tmp / "runs" / "demo"
    page = check_cv_output(out, MODEL_NAMES["demo"], SYNTHETIC_CLASSES, n_splits=3)
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["datamodule"]["colour"] == "grayscale"
    shift = json.loads((out / "cross_dataset_other_lab.json").read_text())
    assert shift["n_images"] == 8 and shift["excluded"] == 2, shift
    assert json.loads((out / "robustness.json").read_text())
    assert "other_lab" in page and "cross-dataset test on other_lab" in result.out


@runs("classify model.ckpt cells/ --out predictions.csv --overlays overlays/")
def _run_classify(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    shutil.copy(shared.model_checkpoint(), tmp / "model.ckpt")
    write_cells(tmp / "cells", 3)
    result = cli(list(cmd.argv)).ok()
    assert "3 images classified: predictions.csv" in result.out
    check_predictions_csv(tmp / "predictions.csv", SYNTHETIC_CLASSES, 3)
    assert sorted(p.name for p in (tmp / "overlays").iterdir()) == [
        f"cell_{i}_{branch}.png" for i in range(3) for branch in ("cell", "nucleus")
    ]


PRINT_CONFIG = "classify model.ckpt cells/ --batch_size 8 --print_config > classify.yaml"


def _print_classify_config(tmp: Path, shared: Shared) -> Result:
    """The documented ``--print_config`` line, its stdout written to ``classify.yaml``."""
    shutil.copy(shared.model_checkpoint(), tmp / "model.ckpt")
    write_cells(tmp / "cells", 3)
    argv = shlex.split(PRINT_CONFIG)
    result = cli(argv[: argv.index(">")]).ok()
    (tmp / "classify.yaml").write_text(result.out)
    return result


@runs(PRINT_CONFIG)
def _run_print_config(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    import yaml

    _print_classify_config(tmp, shared)
    config = yaml.safe_load((tmp / "classify.yaml").read_text())
    assert config["checkpoint"] == "model.ckpt" and config["inputs"] == ["cells/"]
    assert config["batch_size"] == 8 and config["on_error"] == "raise"
    assert not (tmp / "predictions.csv").exists()  # printing the options runs nothing


@runs("classify --config classify.yaml --overwrite")
def _run_classify_from_config(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    _print_classify_config(tmp, shared)
    result = cli(list(cmd.argv)).ok()
    assert "3 images classified: predictions.csv" in result.out
    check_predictions_csv(tmp / "predictions.csv", SYNTHETIC_CLASSES, 3)


@runs("explain model.ckpt cell.bmp --method integrated_gradients")
def _run_explain(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    shutil.copy(shared.model_checkpoint(), tmp / "model.ckpt")
    write_cells(tmp, 1, suffix=".bmp")[0].rename(tmp / "cell.bmp")
    result = cli(list(cmd.argv)).ok()
    assert "overlays (integrated_gradients): overlays" in result.out
    assert sorted(p.name for p in (tmp / "overlays").iterdir()) == [
        "cell_cell.png",
        "cell_nucleus.png",
    ]


FOLD_CKPT = "runs/paper_dual_branch/fold_0/checkpoints/best.ckpt"


@runs(f"classify {FOLD_CKPT} cells/ --out predictions.csv")
def _run_classify_fold(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    (tmp / FOLD_CKPT).parent.mkdir(parents=True)
    shutil.copy(shared.model_checkpoint(), tmp / FOLD_CKPT)
    write_cells(tmp / "cells", 2)
    result = cli(list(cmd.argv)).ok()
    assert "2 images classified: predictions.csv" in result.out
    check_predictions_csv(tmp / "predictions.csv", SYNTHETIC_CLASSES, 2)


@runs(f"explain {FOLD_CKPT} cell_001.bmp --out overlays/")
def _run_explain_fold(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    (tmp / FOLD_CKPT).parent.mkdir(parents=True)
    shutil.copy(shared.model_checkpoint(), tmp / FOLD_CKPT)
    write_cells(tmp, 1, suffix=".bmp")[0].rename(tmp / "cell_001.bmp")
    cli(list(cmd.argv)).ok()
    assert sorted(p.name for p in (tmp / "overlays").iterdir()) == [
        "cell_001_cell.png",
        "cell_001_nucleus.png",
    ]


@runs("analyze-smear model.ckpt mask_rcnn.pt smears/ --out analysis/")
def _run_analyze_smears(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """``mask_rcnn.pt``: an untrained detector (the command's path, not its accuracy).

    ``--score-threshold 0.99`` keeps the random network's detections few (the run short).
    """
    import torch
    from PIL import Image

    from leukemia_wbc.smear import SyntheticSmear, create_mask_rcnn

    shutil.copy(shared.model_checkpoint(), tmp / "model.ckpt")
    torch.save(create_mask_rcnn().state_dict(), tmp / "mask_rcnn.pt")
    smears = SyntheticSmear(2, size=(128, 160), seed=3, cells_per_field=(2, 3))
    (tmp / "smears").mkdir()
    for i in range(2):
        Image.fromarray(smears.render(i).image).save(tmp / "smears" / f"field{i}.png")
    result = cli([*cmd.argv, "--score-threshold", "0.99"]).ok()
    assert "against the 20 % acute-leukemia threshold" in result.out
    with (tmp / "analysis" / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["path"]).name for r in rows] == ["field0.png", "field1.png"]
    for row in rows:
        assert sum(int(row[c]) for c in SYNTHETIC_CLASSES) == int(row["cells"])
    assert (tmp / "analysis" / "field0_overlay.png").is_file()


@runs("analyze-smear model.ckpt --allidb1 /data/ALL_IDB --scale 0.5")
def _run_analyze_allidb1(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    shutil.copy(shared.model_checkpoint(), tmp / "model.ckpt")
    result = cli(substitute(cmd.argv, tmp)).ok()
    assert "ALL-IDB1 (4 smears" in result.out
    with (tmp / "smear_analysis" / "allidb1.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["stem"] for r in rows] == ["Im001_1", "Im002_1", "Im003_0", "Im004_0"]
    assert [int(r["n_true"]) for r in rows] == [3, 2, 0, 0]


@runs("demo --out runs/demo", slow=True)
def _run_demo(cmd: DocCommand, tmp: Path, shared: Shared) -> None:
    """At toy size (``test_cli.py::test_demo_smoke_run`` runs the same in the fast suite)."""
    args = [*cmd.argv, "--n", "48", "--size", str(SIZE), "--epochs", "1", "--unet-epochs", "1",
            "--no-progress"]  # fmt: skip
    result = cli(args).ok()
    assert "nucleus U-Net: held-out Dice" in result.out
    out = tmp / "runs" / "demo"
    assert (out / "unet.ckpt").is_file() and (out / "comparison.md").is_file()
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "HandcraftedSVM" in page and "DualBranchClassifier" in page


# -- the tests ---------------------------------------------------------------------------------

COMMANDS = documented_commands()


def uncovered(commands: list[DocCommand]) -> list[str]:
    """One message per documented line that has neither a runner nor a reason not to run."""
    return [
        f"{c.where}: `{c.text}` is not run by any test (add a runner in {Path(__file__).name}, "
        "or list it in NOT_RUN with the reason)"
        for c in commands
        if c.key not in RUNNERS and c.key not in NOT_RUN
    ]


def test_every_documented_command_is_run() -> None:
    """Each documented line has a runner or a reason; each runner matches a documented line."""
    assert COMMANDS, "no documented command found: is the extraction broken?"
    problems = uncovered(COMMANDS)
    assert not problems, "\n".join(problems)
    keys = {c.key for c in COMMANDS}
    stale = sorted((set(RUNNERS) | set(NOT_RUN)) - keys)
    assert not stale, f"runners of command lines no longer documented: {stale}"


def test_a_new_documented_line_is_reported_with_its_place(tmp_path: Path) -> None:
    page = tmp_path / "new.md"
    page.write_text("# New\n\n```bash\nleukemia-wbc cv --config demo --new-option 1\n```\n")
    assert uncovered(documented_commands([page])) == [
        "new.md:4: `leukemia-wbc cv --config demo --new-option 1` is not run by any test (add a "
        "runner in test_documented_commands.py, or list it in NOT_RUN with the reason)"
    ]


def test_extraction_reads_blocks_continuations_and_outputs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Inline `leukemia-wbc cv` is prose.\n\n"
        "```bash\n"
        "leukemia-wbc cv --config demo \\\n"
        '    --folds "[3]"  # one fold\n'
        "pip install .\n"
        "```\n\n"
        "```python\nleukemia-wbc = 1\n```\n\n"
        "  ```text\n"
        "  $ leukemia-wbc configs\n"
        "  demo   the demo\n"
        "  ```\n"
    )
    found = documented_commands([page])
    assert [(c.where.rpartition(":")[2], c.argv, c.output) for c in found] == [
        ("4", ("cv", "--config", "demo", "--folds", "[3]"), ()),
        ("14", ("configs",), ("demo   the demo",)),
    ]


def _params() -> list[object]:
    seen: dict[str, DocCommand] = {}
    for c in COMMANDS:
        seen.setdefault(c.key, c)  # a line documented twice runs once
    return [
        pytest.param(c, id=c.where, marks=[pytest.mark.slow] if c.key in SLOW else [])
        for c in seen.values()
        if c.key in RUNNERS
    ]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    return Shared(tmp_path_factory.mktemp("shared"), COMMANDS)


@pytest.mark.parametrize("cmd", _params())
def test_documented_command_runs(
    cmd: DocCommand, shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    RUNNERS[cmd.key](cmd, tmp_path, shared)
