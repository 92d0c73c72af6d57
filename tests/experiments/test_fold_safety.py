"""Cross-validation folders that survive concurrent runs, damaged files and restarts.

A fold is locked while a run trains it (``fold_<k>/fold.lock``), a damaged ``last.ckpt`` or
``fold.json`` stops a run with one message naming the file and ``--restart-fold``, and a
restarted fold's old files are kept under ``restarted/``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from leukemia_wbc.cli import main
from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.experiments._fold_checks import DamagedFoldError
from leukemia_wbc.experiments._fold_lock import FoldLock, _pid_start
from leukemia_wbc.experiments._folds import read_history
from leukemia_wbc.tasks import CellClassifier
from tests.cli._layouts import MODEL_OVERRIDES, quick_cv, quick_data

QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
LOCK_LOG = "leukemia_wbc.experiments"


@pytest.fixture(scope="module")
def synthetic() -> SyntheticWBC:
    return SyntheticWBC(36, size=32, seed=3, n_patients=6, difficulty=0.1)


def validator(ds: SyntheticWBC, out: Path, **kwargs: Any) -> CrossValidator:
    args: dict[str, Any] = {
        "n_splits": 3,
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "trainer_kwargs": QUIET,
        **kwargs,
    }
    task = CellClassifier("resnet10t", num_classes=4, head_hidden=(8,))
    return CrossValidator(
        task, WBCDataModule(ds, size=32, batch_size=12, augment=False), out, **args
    )


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process of this host that is not the test's."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, *, host: str | None = None, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"pid": pid, "host": host or socket.gethostname(),
            "started": "2024-05-01T09:30:00+00:00", "run": "another-run", **extra}  # fmt: skip
    path = folder / "fold.lock"
    path.write_text(json.dumps(body))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def cli_args(out: Path) -> list[str]:
    """A quick ``cv`` of a tiny CellClassifier (no SVM) through the real command."""
    return ["cv", "--config", "resnet50_baseline", *MODEL_OVERRIDES["resnet50_baseline"],
            "--data.dataset.init_args.n", "24", "--data.augment", "false",
            *quick_data(batch_size=8), *quick_cv(out)]  # fmt: skip


# -- locks -------------------------------------------------------------------------------------
def test_fold_held_by_a_live_process_is_skipped_and_left_untouched(
    synthetic: SyntheticWBC, tmp_path: Path, live_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "cv"
    lock = write_lock(out / "fold_1", live_pid)
    (out / "fold_1" / "logs").mkdir()
    (out / "fold_1" / "logs" / "metrics.csv").write_text("epoch,step,train_loss\n0,3,1.2\n")
    before = snapshot(out / "fold_1")
    cv = validator(synthetic, out)
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG):
        result = cv.run()
    host = socket.gethostname()
    message = f"fold 1 is being trained by pid {live_pid} on host {host} since 2024-05-01T09:30"
    assert message in caplog.text and "skipped" in caplog.text
    assert "folds [1] skipped" in caplog.text
    assert cv.skipped == [1]
    assert [f.fold for f in result.folds] == [0, 2]
    assert snapshot(out / "fold_1") == before  # nothing of that fold touched
    assert lock.is_file()
    assert not (out / "result.json").exists()  # not merged as if complete
    for k in (0, 2):  # this run's own locks are released
        assert (out / f"fold_{k}" / "fold.json").is_file()
        assert not (out / f"fold_{k}" / "fold.lock").exists()


class _OtherRunFinishes(Callback):
    """While this run trains fold 2, the run holding fold 1 finishes it (files copied in)."""

    def __init__(self, done: Path, out: Path) -> None:
        self.done, self.out = done, out

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.default_root_dir.endswith("fold_2"):
            for path in sorted(self.done.rglob("*")):
                dest = self.out / path.relative_to(self.done)
                if path.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                else:
                    dest.write_bytes(path.read_bytes())
            (self.out / "fold.lock").unlink()


def test_a_skipped_fold_finished_by_the_other_run_is_merged(
    synthetic: SyntheticWBC, tmp_path: Path, live_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    validator(synthetic, other).run(folds=[1])  # what the other run will have written
    out = tmp_path / "cv"
    write_lock(out / "fold_1", live_pid)
    cv = validator(synthetic, out, callbacks=[_OtherRunFinishes(other / "fold_1", out / "fold_1")])
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG):
        result = cv.run()
    assert cv.skipped == [1] and [f.fold for f in result.folds] == [0, 1, 2]
    assert (out / "result.json").is_file()  # every fold finished: merged after all
    assert "the merged result is not written" not in caplog.text


def test_a_stale_lock_is_taken_over(
    synthetic: SyntheticWBC, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "cv"
    pid = dead_pid()
    write_lock(out / "fold_0", pid)
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG):
        cv = validator(synthetic, out)
        result = cv.run(folds=[0])
    assert f"fold 0: taking over the stale lock {out / 'fold_0' / 'fold.lock'}" in caplog.text
    assert f"pid {pid} on host" in caplog.text
    assert cv.skipped == [] and [f.fold for f in result.folds] == [0]
    assert (out / "fold_0" / "fold.json").is_file()
    assert not (out / "fold_0" / "fold.lock").exists()


def test_lock_file_states(tmp_path: Path, live_pid: int) -> None:
    """A lock being written, a crashed half-written one, a reused process id, another host."""
    lock = FoldLock(tmp_path / "fold_0", 0)
    (tmp_path / "fold_0").mkdir()
    lock.path.write_bytes(b"")  # another run between creating and writing it
    owner = lock.acquire("me")
    assert owner is not None and "another run" in owner.describe() and lock.path.read_bytes() == b""
    old = time.time() - 60
    os.utime(lock.path, (old, old))  # ... a minute later: that run died in between
    assert lock.acquire("me") is None and lock.held
    body = json.loads(lock.path.read_text())
    assert body["pid"] == os.getpid() and body["host"] == socket.gethostname()
    assert body["run"] == "me" and body["started"]
    lock.release()
    assert not lock.path.exists()

    start = _pid_start(live_pid)
    write_lock(lock.folder, live_pid, pid_start=start)
    assert lock.acquire("me") is not None  # a live owner
    if start is not None:  # the id now names a younger process: the owner is gone
        write_lock(lock.folder, live_pid, pid_start=start - 1)
        assert lock.acquire("me") is None
        lock.release()
    write_lock(lock.folder, dead_pid(), host="another-host.example")
    owner = lock.acquire("me")  # a process of another host cannot be checked: held
    assert owner is not None and owner.host == "another-host.example"

    lock.path.unlink()
    assert lock.acquire("me") is None
    write_lock(lock.folder, live_pid)  # another run took it over meanwhile: not removed
    lock.release()
    assert json.loads(lock.path.read_text())["pid"] == live_pid


# -- damaged files -----------------------------------------------------------------------------
def test_truncated_last_checkpoint_names_the_file_then_restart_keeps_it(
    synthetic: SyntheticWBC, tmp_path: Path
) -> None:
    out = tmp_path / "cv"
    last = out / "fold_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2000)}, "epoch": 0}, last)
    last.write_bytes(last.read_bytes()[:3000])  # a job killed while writing it
    damaged = last.read_bytes()
    with pytest.raises(DamagedFoldError) as err:
        validator(synthetic, out).run(folds=[0])
    message = str(err.value)
    assert message.startswith(f"{last} is damaged (truncated or not a checkpoint")
    assert "--restart_fold 0" in message and "restart_folds=[0]" in message
    assert not list((out / "fold_0").glob("logs*"))  # stopped before Lightning started
    assert not (out / "fold_0" / "fold.lock").exists()  # released on the error

    result = validator(synthetic, out).run(folds=[0], restart_folds=[0])
    assert [f.fold for f in result.folds] == [0] and not result.folds[0].resumed
    (kept,) = (out / "restarted").iterdir()
    assert kept.name.startswith("fold_0-")
    assert (kept / "checkpoints" / "last.ckpt").read_bytes() == damaged  # kept, not deleted
    assert not (kept / "fold.lock").exists()


def test_damaged_fold_json_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cv"
    assert main([*cli_args(out), "--folds", "[0]"]) == 0
    record = out / "fold_0" / "fold.json"
    first = json.loads(record.read_text())
    record.write_text('{"fold": 0, "metrics": {"accu')  # a truncated copy
    capsys.readouterr()
    assert main([*cli_args(out), "--folds", "[0]"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{record} is damaged (not a fold record: JSONDecodeError" in err
    assert "rerun with --restart_fold 0" in err and f"{out / 'restarted'}/fold_0-<time>/" in err

    assert main([*cli_args(out), "--folds", "[0]", "--restart-fold", "0"]) == 0
    (kept,) = (out / "restarted").iterdir()
    assert (kept / "fold.json").read_text() == '{"fold": 0, "metrics": {"accu'
    assert (kept / "checkpoints" / "best.ckpt").is_file()
    again = json.loads(record.read_text())
    assert again["fold"] == 0 and again["n_test"] == first["n_test"]
    assert (out / "fold_0" / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow  # 36 s; --restart_fold through the command is also run fast above
def test_restart_fold_through_the_command_and_a_live_lock(
    tmp_path: Path,
    live_pid: int,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``--restart-fold`` (repeatable) trains folds again; a locked fold is reported, no report."""
    out = tmp_path / "cv"
    assert main([*cli_args(out), "--folds", "[0,1]"]) == 0
    old = {k: (out / f"fold_{k}" / "fold.json").read_bytes() for k in (0, 1)}
    write_lock(out / "fold_2", live_pid)
    capsys.readouterr()
    args = ["--restart-fold", "0", "--restart-fold", "1"]
    assert main([*cli_args(out), *args]) == 0
    printed = capsys.readouterr()
    assert "folds [2] skipped" in printed.out and "--collect" in printed.out
    assert f"fold 2 is being trained by pid {live_pid}" in caplog.text
    assert not (out / "report").exists() and not (out / "result.json").exists()
    kept = sorted((out / "restarted").iterdir())
    assert [p.name.partition("-")[0] for p in kept] == ["fold_0", "fold_1"]
    for k, folder in enumerate(kept):
        assert (folder / "fold.json").read_bytes() == old[k]
        assert (out / f"fold_{k}" / "fold.json").is_file()
    assert sorted(p.name for p in (out / "fold_2").iterdir()) == ["fold.lock"]

    assert main([*cli_args(out), "--folds", "[0]", "--restart-fold", "[2]"]) == 1
    assert "restart_folds [2] are not among the folds run ([0])" in capsys.readouterr().err


# -- weights_only, logs ------------------------------------------------------------------------
class Interrupt(Callback):
    """Stop fold 0 in its second epoch (after the first one's last.ckpt), as a killed job would."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.default_root_dir.endswith("fold_0") and trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_resumed_fold_restores_checkpoints_with_weights_only(
    synthetic: SyntheticWBC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cv"
    with pytest.raises((KeyboardInterrupt, SystemExit, RuntimeError)):
        validator(synthetic, out, max_epochs=3, callbacks=[Interrupt()]).run(folds=[0])
    assert (out / "fold_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "fold_0" / "fold.lock").exists()  # released when the fold failed
    calls: list[tuple[str, Any, Any]] = []
    for name in ("fit", "predict"):
        original = getattr(pl.Trainer, name)

        def spy(self: pl.Trainer, *args: Any, _name: str = name, _f: Any = original,
                **kwargs: Any) -> Any:  # fmt: skip
            calls.append((_name, kwargs.get("ckpt_path"), kwargs.get("weights_only")))
            return _f(self, *args, **kwargs)

        monkeypatch.setattr(pl.Trainer, name, spy)
    result = validator(synthetic, out, max_epochs=3).run(folds=[0])
    fold = result.folds[0]
    assert fold.resumed and [h["epoch"] for h in fold.history] == [0.0, 1.0, 2.0]
    assert [(c[0], Path(c[1]).name, c[2]) for c in calls] == [
        ("fit", "last.ckpt", True),
        ("predict", "best.ckpt", True),
    ]


def test_interleaved_metrics_log_does_not_block_the_fold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows two runs once wrote into one metrics.csv are left out of the history, with a note."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "metrics.csv").write_text(
        "epoch,step,train_loss,val_loss\n0,3,1.5,1.4\n0,3,1.5,1.31,3,1.2,1.1\n1,7,1.0,0.9\n"
        "1,7,1.0,0.9x\n1,7,1.0\x00,0.85\n"
    )
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG):
        history = read_history(tmp_path)
    assert [h["epoch"] for h in history] == [0.0, 1.0]
    assert history[0]["val_loss"] == pytest.approx(1.4)
    assert history[1]["train_loss"] == pytest.approx(1.0)
    assert history[1]["val_loss"] == pytest.approx(0.85)  # a stray NUL byte is dropped
    assert "2 unreadable rows left out of the history (lines 3, 5)" in caplog.text


# -- distributed -------------------------------------------------------------------------------
SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    from leukemia_wbc.data import SyntheticWBC, WBCDataModule
    from leukemia_wbc.experiments import CrossValidator
    from leukemia_wbc.tasks import CellClassifier

    torch.set_num_threads(1)
    ds = SyntheticWBC(36, size=32, seed=3, n_patients=6, difficulty=0.1)
    dm = WBCDataModule(ds, size=32, batch_size=6, augment=False)
    task = CellClassifier("resnet10t", num_classes=4, head_hidden=(8,))
    cv = CrossValidator(task, dm, sys.argv[1], n_splits=3, max_epochs=1, accelerator="cpu",
                        devices=2, strategy="ddp",
                        trainer_kwargs={"enable_progress_bar": False,
                                        "enable_model_summary": False})
    result = cv.run()
    print("folds", [f.fold for f in result.folds], "skipped", cv.skipped)
    """
)


# Two processes of DDP on 2 cores (20 s); it failed once under a parallel test load and passed
# alone, so it runs with the slow tests (-m slow) until that is understood.
@pytest.mark.slow
def test_ddp_rank_zero_locks_and_the_other_rank_follows(tmp_path: Path, live_pid: int) -> None:
    """Fold 1 is held by another run: both ranks skip it, train folds 0 and 2, and agree."""
    script = tmp_path / "cv_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    lock = write_lock(out / "fold_1", live_pid)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LEUKEMIA_WBC_CV_RUN", None)
    proc = subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    assert proc.stdout.count("folds [0, 2] skipped [1]") == 2  # both ranks
    assert proc.stderr.count(f"fold 1 is being trained by pid {live_pid}") == 1  # rank 0 only
    assert sorted(p.name for p in lock.parent.iterdir()) == ["fold.lock"]
    for k in (0, 2):
        assert (out / f"fold_{k}" / "fold.json").is_file()
        assert not (out / f"fold_{k}" / "fold.lock").exists()
    assert not (out / "result.json").exists()
