"""Errors a user can act on: each names the file (and line) at fault."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class RoamingError(Exception):
    """Base class for errors reported to the user without a traceback."""


class DataError(RoamingError):
    """Input data is missing, malformed or inconsistent, or a file cannot be written."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ConfigError(RoamingError):
    """A command-line argument or configuration value is invalid."""


class StoppedError(RoamingError):
    """Training stopped on request (a signal) after writing a checkpoint: rerunning resumes.

    ``status`` is the exit status, 128 + the signal number, as a shell reports a signal."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NonFiniteError(RoamingError):
    """A loss, output or metric is NaN or infinite: the run diverged and has no result."""


# Below this many free bytes a failed write is reported as a full disk: torch.save and some HDF5
# paths report it only as a generic write failure.
_FULL = 1 << 20
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")


def os_cause(error: BaseException) -> str | None:
    """The operating system's reason for ``error`` ("no space left on device", "permission
    denied", …), also when a library reports it only in its message (HDF5); else None."""
    code = getattr(error, "errno", None)
    if not isinstance(code, int):
        found = _ERRNO_IN_TEXT.search(str(error))
        code = int(found.group(1)) if found else None
    if code is None or code == 0:
        return None
    return os.strerror(code).lower()


def disk_full(folder: str | Path) -> bool:
    """Whether the file system holding ``folder`` has (almost) no space left."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _FULL


def write_cause(error: BaseException, folder: str | Path) -> str | None:
    """Why writing into ``folder`` failed, in words, when the cause is the file system (full,
    read-only, no permission); None when ``error`` is something else."""
    cause = os_cause(error)
    if cause is not None and isinstance(error, OSError):
        return cause
    if disk_full(folder):
        return os.strerror(errno.ENOSPC).lower()
    return None
