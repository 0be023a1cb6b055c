"""Each dataset's reference training protocol and task names (docs/protocol.md), without torch.

This is what the grid, the run configuration and the training loop agree on: the defaults of a
run that leaves an option out, what Δ counts, which splits train and evaluate, and the names of a
task set's tasks in head order. It imports no deep-learning code, so expanding ``params.yaml``
(every Snakemake start-up) stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from roaming.data.celeba import TASK_GROUP_NAMES
from roaming.data.dense import CITYSCAPES_CLASSES, NYUV2_CLASSES
from roaming.errors import ConfigError

TASK_SETS = ("paper", "standard")
DEFAULT_TASK_SET = "paper"


@dataclass(frozen=True)
class Protocol:
    """A dataset's reference training protocol and its architecture.

    ``update_clock`` says what Δ counts: ``"epoch_fraction"`` (CelebA: an event every
    floor(Δ·batches_per_epoch) + 1 iterations, as the reference) or ``"epochs"`` (dense
    datasets: an event at the end of epoch e when e ≥ Δ and e % Δ == 0). ``eval_interval``:
    the model is evaluated on ``eval_split`` after every epoch e with e % eval_interval == 0, as
    the reference (CelebA every epoch; CityScapes and NYUv2 every 5 epochs from epoch 5), and
    after the last epoch.
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
    eval_interval: int


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
    eval_interval=5,
)

PROTOCOLS: dict[str, Protocol] = {
    "celeba": Protocol(
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
        eval_interval=1,
    ),
    "cityscapes": _SEGNET,
    "nyuv2": replace(_SEGNET, batch_size=2, sharing={"mr": 0.8, "tr": 0.8}),
}

# How the datasets are written in titles and tables.
DATASET_LABELS = {"celeba": "CelebA", "cityscapes": "CityScapes", "nyuv2": "NYUv2"}
# The dense datasets: their classes and whether they have surface normals.
DENSE_CLASSES = {"cityscapes": (CITYSCAPES_CLASSES, False), "nyuv2": (NYUV2_CLASSES, True)}


def is_evaluated(epoch: int, epochs: int, interval: int) -> bool:
    """Whether a run of ``epochs`` epochs is evaluated after ``epoch`` (1-based): every
    ``interval`` epochs and after the last."""
    return epoch % interval == 0 or epoch == epochs


def get_protocol(dataset: str) -> Protocol:
    """The protocol of ``dataset``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return PROTOCOLS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r} (known: {', '.join(PROTOCOLS)})") from None


def is_dense(dataset: str) -> bool:
    """Whether ``dataset`` is a scene-understanding dataset (CityScapes, NYUv2)."""
    return dataset in DENSE_CLASSES


def dense_task_names(
    classes: list[str] | tuple[str, ...], task_set: str, normals: bool
) -> list[str]:
    """The tasks of a dense task set in head order: ``paper`` gives ``seg_<class>`` per class,
    ``standard`` one ``seg``; then ``depth`` and, with normals, ``normals``."""
    if task_set not in TASK_SETS:
        raise ConfigError(f"--task-set must be one of {', '.join(TASK_SETS)}, got {task_set!r}")
    names = [f"seg_{name}" for name in classes] if task_set == "paper" else ["seg"]
    return [*names, "depth", *(["normals"] if normals else [])]


def task_names(dataset: str, task_set: str = DEFAULT_TASK_SET) -> tuple[str, ...]:
    """The tasks of ``dataset`` in the order ``roaming train --task`` counts them.

    CelebA: its task groups (one task set). CityScapes / NYUv2: ``paper`` gives ``seg_<class>``
    per class, then ``depth`` (and ``normals`` on NYUv2); ``standard`` gives ``seg``, ``depth``
    (and ``normals``).
    """
    if dataset in DENSE_CLASSES:
        classes, normals = DENSE_CLASSES[dataset]
        return tuple(dense_task_names(classes, task_set, normals))
    if dataset == "celeba":
        if task_set != DEFAULT_TASK_SET:
            raise ConfigError(f"CelebA has only the 'paper' task set, got --task-set {task_set!r}")
        return TASK_GROUP_NAMES
    raise ConfigError(f"unknown dataset {dataset!r} (known: {', '.join(PROTOCOLS)})")
