"""Load one split of a prepared ``roaming`` HDF5 file into memory.

Every prepared split fits in memory as uint8 (CelebA train at 78×64: about 2.4 GB), so training
gathers batches by indexing tensors: no DataLoader workers, no per-sample file reads, and the
order of samples is a pure function of the run's seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from roaming.data.prepared import check_fingerprint, check_format, read_checked
from roaming.errors import DataError


@dataclass
class Split:
    """The arrays of one split, images as uint8 (N, H, W, 3), everything else per sample."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device``."""
        return Split(
            self.images.to(device), {key: value.to(device) for key, value in self.targets.items()}
        )

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Samples ``index`` as float images in [0, 1], (B, 3, H, W), and their targets."""
        images = self.images[index].permute(0, 3, 1, 2).float().div_(255)
        return {"images": images} | {key: value[index] for key, value in self.targets.items()}


def read_attributes(path: str | Path) -> dict[str, Any]:
    """The root attributes of a prepared file, JSON strings decoded, after checking its format
    version and that its fingerprint matches its per-dataset checksum records."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "prepared data file not found (run `roaming prepare` first)")
    try:
        with h5py.File(path, "r") as file:
            attrs = {key: _plain(value) for key, value in file.attrs.items()}
            if "dataset" not in attrs:
                raise DataError(
                    path, "missing root attribute 'dataset': not written by `roaming prepare`"
                )
            check_format(path, attrs)
            check_fingerprint(path, file)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise DataError(path, f"not a readable HDF5 file ({_cause(error)})") from None
    return attrs


def _cause(error: Exception) -> str:
    """An HDF5 error in one line: h5py's messages end with the library's detail list."""
    return str(error).splitlines()[0].strip() or type(error).__name__


def _plain(value: Any) -> Any:
    """An HDF5 attribute as plain Python: bytes decoded, arrays as lists, JSON strings parsed."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def load_split(path: str | Path, split: str, fields: tuple[str, ...]) -> Split:
    """Read ``images`` and the target ``fields`` of group ``split`` into memory, every chunk's
    checksum and every dataset's digest verified (:mod:`roaming.data.prepared`)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            if split not in file:
                raise DataError(path, f"no split {split!r} (has: {', '.join(sorted(file))})")
            group = file[split]
            missing = [name for name in ("images", *fields) if name not in group]
            if missing:
                raise DataError(path, f"split {split!r} lacks dataset(s): {', '.join(missing)}")
            images = torch.from_numpy(read_checked(path, group["images"]))
            targets = {name: torch.from_numpy(read_checked(path, group[name])) for name in fields}
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise DataError(path, f"split {split!r} unreadable ({_cause(error)})") from None
    return Split(images, targets)
