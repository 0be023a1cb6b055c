"""The registry of datasets: each one's reference training protocol and task set.

A prepared HDF5 file names its dataset in its root attribute ``dataset``; training looks the name
up here for the defaults of SPEC §5 and for the task set that turns head outputs into losses and
metrics. A new dataset is one entry here plus its task set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from roaming.errors import ConfigError
from roaming.tasks import TaskSet
from roaming.tasks.attributes import celeba_tasks
from roaming.tasks.dense import dense_tasks


@dataclass(frozen=True)
class Protocol:
    """A dataset's reference training protocol (SPEC §5) and its architecture.

    ``update_clock`` says what Δ counts: ``"epoch_fraction"`` (CelebA: an event every
    floor(Δ·batches_per_epoch) + 1 iterations, as the reference) or ``"epochs"`` (dense
    datasets: an event at the end of epoch e when e ≥ Δ and e % Δ == 0).
    """

    model: str
    epochs: int
    batch_size: int
    lr: float
    sharing: dict[str, float]
    update_interval: float
    update_clock: str
    task_steps: str
    train_split: str
    eval_split: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's protocol and how to build its task set from the prepared file's attributes.

    ``tasks(attrs, task, task_set)`` gives the task set ``task_set`` (None: the dataset's
    default), restricted to task ``task`` for single-task runs.
    """

    name: str
    protocol: Protocol
    tasks: Callable[[dict[str, Any], int | None, str], TaskSet]


# The MTAN SegNet protocol of the reference (CityScapes values; NYUv2 differs in batch and p).
_SEGNET = Protocol(
    model="segnet",
    epochs=500,
    batch_size=8,
    lr=1e-4,
    sharing={"mr": 0.6, "tr": 0.6},
    update_interval=1,
    update_clock="epochs",
    task_steps="joint",
    train_split="train",
    eval_split="test",
)

DATASETS: dict[str, DatasetSpec] = {
    "celeba": DatasetSpec(
        "celeba",
        Protocol(
            model="resnet18",
            epochs=40,
            batch_size=256,
            lr=1e-4,
            sharing={"mr": 0.8, "tr": 0.9},
            update_interval=0.1,
            update_clock="epoch_fraction",
            task_steps="per_task",
            train_split="train",
            eval_split="val",
        ),
        celeba_tasks,
    ),
    "cityscapes": DatasetSpec("cityscapes", _SEGNET, dense_tasks),
    "nyuv2": DatasetSpec(
        "nyuv2",
        replace(_SEGNET, batch_size=2, sharing={"mr": 0.8, "tr": 0.8}),
        dense_tasks,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise ConfigError(f"unknown dataset {name!r} (known: {known})") from None
