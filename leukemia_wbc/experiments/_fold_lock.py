"""Per-fold locks: one run at a time trains a fold, and every rank of a distributed run agrees.

A run takes fold ``k`` by creating ``fold_<k>/fold.lock`` atomically (``O_CREAT | O_EXCL``)
with its process id, host name, start time and run id, and removes it once the fold is done or
has failed. A lock whose process no longer exists on this host (or whose process id now belongs
to a younger process) is stale: it is taken over with a logged warning. A lock of a live
process, or of another host, makes the run skip the fold.

In a distributed run only rank 0 takes locks; the other ranks follow it. Once the process
group exists (after the first fold's ``fit``) rank 0 broadcasts what it chose. Before that, a
rank started by Lightning or ``torchrun`` waits for the lock that bears its run id (every rank
of one run shares it, see :func:`run_id`) and is marked ready: it trains that fold and skips
the ones before it, as rank 0 did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only

from .._io import atomic_write_bytes

__all__ = ["LOCK_FILE", "FoldLock", "LockOwner", "claim_fold", "rank", "run_fold_locked", "run_id"]

_log = logging.getLogger(__name__)

#: The lock file in a fold's folder.
LOCK_FILE = "fold.lock"
#: Environment variable holding the run id (inherited by the processes of the other ranks).
RUN_ENV = "LEUKEMIA_WBC_CV_RUN"
#: Seconds a non-zero rank waits for rank 0 to take its first fold.
FOLLOW_TIMEOUT = 3600.0
#: Seconds an unreadable lock file may be one that another run is writing right now.
_UNWRITTEN_GRACE = 10.0

#: What a run does with a fold: train it, leave it (finished), or skip it (another run's).
Action = Literal["train", "done", "skip"]


@dataclass(frozen=True)
class LockOwner:
    """Who holds a fold's lock (the content of ``fold.lock``).

    Attributes:
        pid: Process id (``-1`` while the file is being written).
        host: Host name.
        started: When the lock was taken (ISO 8601, local time with offset).
        run: The run id shared by the ranks of one run.
        pid_start: The process's start time in clock ticks after boot (Linux), which tells a
            live owner from a younger process that got its id; ``None`` where unknown.
        ready: Whether the owner has prepared the fold and trains it now.
    """

    pid: int
    host: str
    started: str
    run: str = ""
    pid_start: int | None = None
    ready: bool = False

    def describe(self) -> str:
        """``pid 1234 on host X since <time>``."""
        who = f"pid {self.pid}" if self.pid > 0 else "another run (its lock is being written)"
        return f"{who} on host {self.host} since {self.started}"


def _pid_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot, from ``/proc`` (else None)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def _parse(raw: bytes) -> LockOwner | None:
    """The owner a lock file names, or ``None`` for an empty or unreadable file."""
    try:
        body = json.loads(raw)
        start = body.get("pid_start")
        owner = LockOwner(
            pid=int(body["pid"]),
            host=str(body["host"]),
            started=str(body["started"]),
            run=str(body.get("run", "")),
            pid_start=None if start is None else int(start),
            ready=bool(body.get("ready", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return owner if owner.pid > 0 else None


def _alive(owner: LockOwner) -> bool:
    """Whether the owner may still be running (always, for a process on another host)."""
    if owner.host != socket.gethostname() or owner.pid == os.getpid():
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        pass
    now = _pid_start(owner.pid)
    return owner.pid_start is None or now is None or now == owner.pid_start


def _read(path: Path) -> LockOwner | None:
    """The owner of a lock file (``None`` when there is none or it cannot be read)."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _take_over(path: Path, seen: bytes) -> None:
    """Remove the stale lock ``path`` if it still holds ``seen`` (a fresh one is put back)."""
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another run took it over first
        return
    if aside.read_bytes() != seen:  # a fresh lock of another run came in between
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()


class FoldLock:
    """The lock of one fold's folder (``fold.lock``), taken without waiting.

    Args:
        folder: The fold's folder (created by :meth:`acquire` if needed).
        fold: The fold index (for messages).
    """

    def __init__(self, folder: Path, fold: int) -> None:
        self.folder, self.fold = folder, fold
        self.path = folder / LOCK_FILE
        self._mine: bytes | None = None
        self._owner: LockOwner | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._mine is not None

    def acquire(self, run: str) -> LockOwner | None:
        """Take the lock, taking over a stale one with a logged warning.

        Args:
            run: The run id to record.

        Returns:
            ``None`` once taken; the owner when a live process (or another host) holds it.

        Raises:
            RuntimeError: The lock kept changing hands while this run tried to take it.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        me = LockOwner(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            run=run,
            pid_start=_pid_start(os.getpid()),
        )
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    raw, age = self.path.read_bytes(), time.time() - self.path.stat().st_mtime
                except FileNotFoundError:  # released in between: try again
                    continue
                owner = _parse(raw)
                if owner is None and age < _UNWRITTEN_GRACE:
                    mtime = datetime.fromtimestamp(time.time() - age).astimezone()
                    return LockOwner(-1, "?", mtime.isoformat(timespec="seconds"))
                if owner is not None and _alive(owner):
                    return owner
                _log.warning(
                    "fold %d: taking over the stale lock %s (%s; its process is gone)",
                    self.fold, self.path,
                    owner.describe() if owner is not None else "an unreadable file",
                )  # fmt: skip
                _take_over(self.path, raw)
                continue
            data = json.dumps(asdict(me)).encode()
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._mine, self._owner = data, me
            return None
        raise RuntimeError(f"{self.path}: the lock kept changing hands; run again")

    def mark_ready(self) -> None:
        """Record that the fold is prepared and training starts (what waiting ranks wait for)."""
        if self._owner is None or self._owner.ready:
            return
        ready = replace(self._owner, ready=True)
        data = json.dumps(asdict(ready)).encode()
        atomic_write_bytes(self.path, data)
        self._mine, self._owner = data, ready

    def release(self) -> None:
        """Remove the lock if this object holds it (one another run took over is left)."""
        if self._mine is None:
            return
        try:
            current: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            current = None
        if current == self._mine:
            self.path.unlink(missing_ok=True)
        elif current is not None:
            _log.warning("%s now belongs to another run; left in place", self.path)
        self._mine = self._owner = None


def rank() -> int:
    """This process's global rank (0 outside a distributed run)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def run_id() -> str:
    """An id shared by every rank of this run, set in the environment for the ranks to come.

    Taken from ``LEUKEMIA_WBC_CV_RUN`` when set (the processes Lightning starts for the other
    ranks inherit it), else from the launcher's variables of a multi-process run
    (``torchrun``, SLURM, ``MASTER_ADDR``/``MASTER_PORT``), else a new random id.

    Returns:
        The run id.
    """
    value = os.environ.get(RUN_ENV)
    if not value:
        keys = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "MASTER_ADDR",
                "MASTER_PORT")  # fmt: skip
        parts = [os.environ.get(key, "") for key in keys]
        many = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
        value = ":".join(parts) if many and any(parts) else uuid.uuid4().hex
        os.environ[RUN_ENV] = value
    return value


def _grouped() -> bool:
    """Whether a process group of several ranks exists (after a distributed ``fit``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _follow(lock: FoldLock, run: str, needs: Callable[[], bool], later: Sequence[Path]) -> Action:
    """What rank 0 chose for a fold, seen by another rank before the process group exists."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while True:
        owner = _read(lock.path)
        if owner is not None and owner.run == run and owner.ready:
            return "train"
        if not needs():
            return "done"
        if any((o := _read(p / LOCK_FILE)) is not None and o.run == run for p in later):
            return "skip"  # rank 0 went on to a later fold
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"rank {rank()}: rank 0 of this run took no fold within {FOLLOW_TIMEOUT:.0f} s "
                "(are the remaining folds finished or trained by other runs?)"
            )
        time.sleep(0.5)


def claim_fold(
    lock: FoldLock,
    run: str,
    *,
    needs: Callable[[], bool],
    prepare: Callable[[], None],
    later: Sequence[Path] = (),
) -> tuple[Action, LockOwner | None]:
    """Decide, on every rank alike, whether this run trains a fold now.

    Rank 0 takes the fold's lock when the fold needs training, prepares it (e.g. moves a
    restarted fold's files aside) and marks the lock ready; the other ranks follow it (see the
    module docstring).

    Args:
        lock: The fold's lock (rank 0 holds it after ``"train"``; the caller releases it).
        run: The run id (:func:`run_id`).
        needs: Whether the fold needs training (unfinished, or restarted).
        prepare: Called on rank 0 once the lock is taken, before the other ranks go on.
        later: The folders of the folds this run takes after this one.

    Returns:
        ``"train"``, ``"done"`` (nothing to train) or ``"skip"`` with the owner of the lock.
    """
    grouped = _grouped()
    if rank() != 0 and not grouped:
        return _follow(lock, run, needs, later), None
    decision: tuple[Action, LockOwner | None] = ("done", None)
    if rank() == 0 and needs():
        owner = lock.acquire(run)
        if owner is not None:
            decision = ("skip", owner)
        elif not needs():  # another run finished it in between
            lock.release()
        else:
            try:
                prepare()
                lock.mark_ready()
            except BaseException:
                lock.release()
                raise
            decision = ("train", None)
    if grouped:
        box: list[object] = [decision]
        dist.broadcast_object_list(box, src=0)
        decision = box[0]  # type: ignore[assignment]
    return decision


def run_fold_locked(
    lock: FoldLock,
    run: str,
    *,
    needs: Callable[[], bool],
    prepare: Callable[[], None],
    train: Callable[[], object],
    explain: Callable[[], object] | None,
    later: Sequence[Path] = (),
    name: str = "",
) -> bool:
    """Train (if needed) and explain one fold under its lock, then release the lock.

    Args:
        lock: The fold's lock.
        run: The run id (:func:`run_id`).
        needs: Whether the fold needs training (unfinished, or restarted).
        prepare: Called on rank 0 once the lock is taken, before training.
        train: Trains the fold (on every rank).
        explain: Writes the fold's attributions (rank 0, under the lock); ``None`` for none.
        later: The folders of the folds this run takes after this one.
        name: The model's name in messages.

    Returns:
        Whether the fold was dealt with; ``False`` when another live run holds it (skipped,
        with a logged warning naming its process, host and start time).
    """
    try:
        action, owner = claim_fold(lock, run, needs=needs, prepare=prepare, later=later)
        if action == "train":
            train()
        elif action == "done":
            _log.info("%s: fold %d already finished, skipped", name, lock.fold)
        explaining = explain is not None and action != "skip" and rank() == 0
        if explaining and not lock.held:  # a finished fold: its attributions are locked too
            owner = lock.acquire(run)
        if action == "skip" or (explaining and owner is not None):
            if owner is not None and rank() == 0:
                _log.warning(
                    "%s: fold %d is being trained by %s; skipped (delete %s if no run is "
                    "training it)", name, lock.fold, owner.describe(), lock.path,
                )  # fmt: skip
            return False
        if explaining and explain is not None:
            explain()
        return True
    finally:
        lock.release()
