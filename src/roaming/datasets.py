"""The registry of datasets: each one's reference training protocol and task set.

A prepared HDF5 file names its dataset in its root attribute ``dataset``; training looks the name
up here for its protocol (:mod:`roaming.protocol`) and for the task set that turns head outputs
into losses and metrics. A new dataset is one entry here, its protocol and its task set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roaming.errors import ConfigError
from roaming.protocol import PROTOCOLS, Protocol
from roaming.tasks import TaskSet
from roaming.tasks.attributes import celeba_tasks
from roaming.tasks.dense import dense_tasks


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's protocol and how to build its task set from the prepared file's attributes.

    ``tasks(attrs, task, task_set)`` gives the task set ``task_set`` (None: the dataset's
    default), restricted to task ``task`` for single-task runs.
    """

    name: str
    protocol: Protocol
    tasks: Callable[[dict[str, Any], int | None, str], TaskSet]


DATASETS: dict[str, DatasetSpec] = {
    "celeba": DatasetSpec("celeba", PROTOCOLS["celeba"], celeba_tasks),
    "cityscapes": DatasetSpec("cityscapes", PROTOCOLS["cityscapes"], dense_tasks),
    "nyuv2": DatasetSpec("nyuv2", PROTOCOLS["nyuv2"], dense_tasks),
}


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise ConfigError(f"unknown dataset {name!r} (known: {known})") from None
