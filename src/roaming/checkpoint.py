"""Saving and loading run state: atomic writes, ``weights_only`` loads.

A checkpoint holds only tensors and plain Python values so it loads with
``torch.load(..., weights_only=True)``: opening a checkpoint never runs code from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from roaming.atomic import atomic_path
from roaming.errors import DataError


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the old file intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything but tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise DataError(path, f"cannot load checkpoint ({error})") from None
