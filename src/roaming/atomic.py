"""Atomic file output: write to a temporary sibling, rename on success.

Snakemake and DVC treat an existing output as done, so a job killed mid-write must never leave a
half-written file under the final name. Temporaries are named after their writer
(``.<name>.<host>.<pid>.<random>.tmp``), so the next write to the same place removes those of
writers on this host that died (even by SIGKILL) and leaves those of live writers alone. A write
that fails because the file system is full, read-only or not writable is reported as one
:class:`DataError` naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py

from roaming.errors import ConfigError, DataError, RoamingError, os_cause, write_cause


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds."""
    with _staged(
        Path(path),
        make=lambda tmp: tmp.touch(mode=0o666 & ~_umask(), exist_ok=False),
        remove=lambda tmp: tmp.unlink(missing_ok=True),
    ) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` if the block succeeds.

    ``path`` may be missing or an empty folder; anything else is refused, so a complete
    output is never mixed with or overwritten by another.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise ConfigError(f"{path} already exists and is not an empty folder")
    with _staged(
        path, make=Path.mkdir, remove=lambda tmp: shutil.rmtree(tmp, ignore_errors=True)
    ) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(
    path: Path, make: Callable[[Path], object], remove: Callable[[Path], object]
) -> Iterator[Path]:
    """A writer-named temporary made by ``make`` next to ``path``, renamed onto it if the block
    succeeds and removed otherwise; OS errors become one line naming ``path``."""
    tmp = _temporary(path)
    try:
        make(tmp)
    except OSError as error:
        raise DataError(path, os_cause(error) or str(error)) from None
    with _reported(path, tmp):
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            remove(tmp)


def _temporary(path: Path) -> Path:
    """A fresh temporary name next to ``path``, after removing dead writers' temporaries."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(path.parent, os_cause(error) or str(error)) from None
    host = socket.gethostname().replace(".", "-")
    for orphan in path.parent.glob(f".{path.name}.{host}.*.tmp"):
        pid = orphan.name[len(f".{path.name}.{host}.") :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(orphan) if orphan.is_dir() else orphan.unlink()
    return path.parent / f".{path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _reported(path: Path, tmp: Path) -> Iterator[None]:
    """Turn a failure of the file system under ``tmp`` into a DataError naming ``path``."""
    try:
        yield
    except RoamingError:
        raise
    except Exception as error:
        filename = getattr(error, "filename", None)
        if filename is not None and not Path(filename).is_relative_to(tmp):
            raise  # about another file (an input, say): reported with its own name
        cause = write_cause(error, tmp.parent)
        if cause is None:
            raise
        raise DataError(path, cause) from None


# Free space kept in reserve when writing HDF5: its library cannot recover from a full disk (a
# failed flush leaves the file open and may crash the process at exit), so writers stop first.
HDF5_RESERVE = 16 << 20


@contextlib.contextmanager
def atomic_h5(path: str | Path, nbytes: int, **options: Any) -> Iterator[h5py.File]:
    """An HDF5 file written atomically (:func:`atomic_path`) after checking that about
    ``nbytes`` fit (:func:`require_space`); ``options`` go to ``h5py.File``. Writers that
    stream much more than they announced call :func:`require_space` as they go."""
    require_space(path, nbytes)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **options) as file:
        yield file


def require_space(path: str | Path, nbytes: int) -> None:
    """Stop with "no space left on device" before writing ``nbytes`` more next to ``path``
    would leave less than :data:`HDF5_RESERVE` free."""
    folder = Path(path).parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return
    free = stats.f_bavail * stats.f_frsize
    if free < nbytes + HDF5_RESERVE:
        raise DataError(
            path,
            f"no space left on device (needs about {_mb(nbytes + HDF5_RESERVE)} MB, "
            f"{_mb(free)} MB free)",
        )


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f}" if nbytes >= 2**20 else f"{nbytes / 2**20:.2f}"


def _umask() -> int:
    """The process umask (outputs should be ordinary files)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented, strict JSON: a NaN or infinity is an error naming
    the key, never a non-standard ``NaN`` token that other tools reject or drop."""
    bad = _non_finite(data)
    if bad is not None:
        raise DataError(path, f"refusing to write a non-finite value ({bad})")
    write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _non_finite(data: Any, where: str = "") -> str | None:
    """``key = value`` of the first NaN or infinity in ``data``, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where or 'value'} = {data}"
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None
