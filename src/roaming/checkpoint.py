"""Saving and loading run state: atomic writes, ``weights_only`` loads, one-line errors.

A checkpoint holds only tensors and plain Python values so it loads with
``torch.load(..., weights_only=True)``: opening a checkpoint never runs code from the file. A file
that cannot be read (truncated, damaged, or holding anything else) is a :class:`DataError`
naming it, never torch's own advice to load it unsafely.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from roaming.atomic import atomic_path
from roaming.errors import DataError


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the old file intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything but tensors and plain values.

    ``mmap`` maps the tensors instead of reading them, for callers that only want the plain
    values (a run's configuration)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, AttributeError, TypeError) as error:
        raise DataError(path, f"not a roaming checkpoint ({_short(error)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(path, f"damaged or truncated ({_short(error)})") from None
    if not isinstance(state, dict) or "config" not in state:
        raise DataError(path, "not a roaming checkpoint (no configuration record)")
    return state


def _short(error: BaseException) -> str:
    """The first line of a load error, without torch's advice on loading unsafely."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for advice in ("Weights only load failed", "(1) In PyTorch", "WeightsUnpickler"):
        if advice in text:
            return "it holds objects other than tensors and plain values"
    text = text.split("weights_only", 1)[0].rstrip(" ,.;:(")
    return text[:160] or type(error).__name__
