"""The run directory: its files, and the lock that gives it one writer at a time.

``roaming train`` fills a run directory (README "Run directory contract"): ``config.json``,
``checkpoint.pt``, ``history.csv``, ``masks.h5`` and, once training is complete, ``model.pt``;
``roaming evaluate`` adds ``metrics/<split>.json``. While it trains, ``train.lock`` is held with
an exclusive ``flock`` and names the holder (pid and host), so a second writer stops with a
message instead of interleaving its files with the first one's. The kernel releases the lock
when its holder dies, even by SIGKILL, so a stale lock never blocks a rerun.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from roaming.errors import ConfigError, DataError, os_cause

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.csv"
MASKS_FILE = "masks.h5"
MODEL_FILE = "model.pt"
METRICS_DIR = "metrics"
LOCK_FILE = "train.lock"
# What a finished run holds besides its configuration: removed before a run starts over, so no
# file of an earlier configuration is ever read as this one's.
RESULT_FILES = (MODEL_FILE, HISTORY_FILE, MASKS_FILE, CHECKPOINT_FILE)
_LOCK_TRIES = 10


def metrics_path(run_dir: str | Path, split: str) -> Path:
    """Where ``roaming evaluate`` writes a run's metrics on ``split``."""
    return Path(run_dir) / METRICS_DIR / f"{split}.json"


class RunLock:
    """The exclusive writer's lock of one run directory (module docstring)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise a :class:`ConfigError` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few tries: a reader checking the lock holds it shared for an instant.
        for attempt in range(_LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if attempt == _LOCK_TRIES - 1:
                    os.close(fd)
                    raise ConfigError(
                        f"{self.path.parent}: already being trained by {_describe(self.path)};"
                        " wait for it to finish or stop it first"
                    ) from None
                time.sleep(0.05)
        previous = _read_holder(self.path)
        if previous is not None:
            pid, host = previous
            print(f"{self.path}: taking over the lock of process {pid} on {host}, which is gone")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as error:
            os.close(fd)
            raise DataError(self.path, os_cause(error) or str(error)) from None
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file (no holder) and release it; the file stays, so the next writer
        locks the same inode."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # unwritable: stale content, the flock counts
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(path: Path) -> tuple[int, str] | None:
    """The (pid, host) the lock file names, or None when it names none."""
    try:
        words = path.read_text().split()
    except OSError:
        return None
    if len(words) != 2 or not words[0].isdigit():
        return None
    return int(words[0]), words[1]


def _describe(path: Path) -> str:
    holder = _read_holder(path)
    return "another process" if holder is None else f"process {holder[0]} on {holder[1]}"


def training_holder(run_dir: str | Path) -> str | None:
    """Who is training ``run_dir`` right now (``"process P on H"``), or None."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _describe(path)
    finally:
        os.close(fd)
    return None


def require_not_training(run_dir: str | Path) -> None:
    """Readers (evaluate, report) take only runs that nobody is writing."""
    holder = training_holder(run_dir)
    if holder is not None:
        raise DataError(run_dir, f"still being trained by {holder}; evaluate it when it is done")


def clear_results(run_dir: str | Path) -> None:
    """Remove what an earlier configuration of the run left (model, history, masks,
    checkpoint, metrics), before the run starts over."""
    run_dir = Path(run_dir)
    for name in RESULT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / METRICS_DIR, ignore_errors=True)


def finished_run(run_dir: str | Path, *, weights: bool = True) -> tuple[Any, dict[str, Any]]:
    """The configuration (:class:`roaming.config.RunConfig`) and ``model.pt`` state of a
    finished run, checked against ``config.json``: a run record edited or mixed up by hand is
    an error naming both files, never a row under the wrong label.

    ``weights=False`` maps the tensors instead of reading them (the configuration is all a
    report needs)."""
    from roaming import checkpoint
    from roaming.config import RunConfig

    run_dir = Path(run_dir)
    model_path, config_path = run_dir / MODEL_FILE, run_dir / CONFIG_FILE
    if not model_path.exists():
        raise DataError(run_dir, f"no {MODEL_FILE}; the run has not finished training")
    state = checkpoint.load(model_path, mmap=not weights)
    try:
        cfg = RunConfig.from_dict(state["config"])
    except (ValueError, TypeError) as error:
        raise DataError(model_path, f"damaged configuration record ({error})") from None
    try:
        recorded = RunConfig.from_dict(json.loads(config_path.read_text()))
    except FileNotFoundError:
        raise DataError(config_path, "missing (the run directory is incomplete)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as error:
        raise DataError(config_path, f"unreadable ({error})") from None
    if recorded != cfg:
        ours, theirs = recorded.to_dict(), cfg.to_dict()
        changed = [key for key in ours if ours[key] != theirs[key]]
        raise DataError(
            config_path,
            f"does not match the configuration in {model_path} ({', '.join(changed)} differ); "
            "the record was edited or mixed up: retrain the run (roaming train --restart)",
        )
    return cfg, state


def finished_config(run_dir: str | Path) -> Any:
    """The checked configuration of a finished run (:func:`finished_run` without weights)."""
    return finished_run(run_dir, weights=False)[0]
