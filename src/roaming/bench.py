"""``roaming bench``: what the active preset's grid costs on a device, measured in one run.

The preset's runs (from :mod:`roaming.grid`, so the bench follows ``params.yaml``) are grouped by
what decides a step's cost: dataset, method kind (STL, MTL, GradNorm, MGDA-UB, SE, and the mask
methods TR and MR together), task steps, sharing ratio and ``compute`` (dense or skip; a dense
mask step costs the same at every sharing ratio, so dense mask runs share one timing). For each
group, at the preset's image size, batch size and width, on synthetic random batches built in
memory, the bench times real :meth:`roaming.train.Trainer.step` calls and one evaluation batch
(:func:`roaming.predict.predict`), after warm-ups that are not timed (see
:class:`Budget`). In the same process it times a **reference-equivalent step** written here, the
authors' per-batch algorithm: T sequential dense masked passes in float32, an Adam step after
each task (CelebA) or one Adam step on the accumulated gradients (CityScapes, NYUv2); every
group's throughput is printed as a ratio against it.

The estimate of a group's device time is ``runs × (epochs × training batches per epoch ÷ steps/s
+ evaluation passes × evaluation batches ÷ evaluation batches/s)``, with one evaluation pass per
evaluated epoch (every ``eval_interval`` epochs and the last) on the dataset's evaluation split
plus one per split of ``evaluate.splits``, split sizes
those of the official releases (real data) or of the preset's fixtures (synthetic data). Mask
updates, data loading, checkpoints and the metrics' end-of-split work are not timed; they are a
small part of an epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from roaming import grid, masks
from roaming.config import DEFAULT_BENCH_COMPUTES, RunConfig, TrainConfig, resolve
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUP_NAMES, TASK_GROUPS, resized_hw
from roaming.data.dense import CITYSCAPES_CLASSES, NYUV2_CLASSES
from roaming.data.splits import Split
from roaming.datasets import get_dataset
from roaming.methods import get_method
from roaming.models import build_model, masked_layers
from roaming.predict import predict
from roaming.protocol import is_evaluated
from roaming.tasks import TaskSet
from roaming.tasks.attributes import AttributeTasks
from roaming.tasks.dense import DenseTasks
from roaming.train import Trainer

# Official split sizes (CelebA's partition file; MTAN's CityScapes and NYUv2 downloads).
OFFICIAL_SIZES = {
    "celeba": {"train": 162770, "val": 19867, "test": 19962},
    "cityscapes": {"train": 2975, "test": 500},
    "nyuv2": {"train": 795, "test": 654},
}
# `roaming fixtures` defaults, for presets whose fixtures leave a size out.
_FIXTURE_SIZES = {
    "celeba": {"train": 600, "val": 150, "test": 150},
    "cityscapes": {"train": 48, "test": 16},
    "nyuv2": {"train": 48, "test": 16},
}
_CELEBA_SOURCE_HW = (218, 178)  # the aligned release's images, H × W
_DENSE_HW = {"cityscapes": (128, 256), "nyuv2": (288, 384)}  # MTAN's downloads
_DENSE_CLASSES = {"cityscapes": CITYSCAPES_CLASSES, "nyuv2": NYUV2_CLASSES}


@dataclass(frozen=True)
class Variant:
    """What decides the cost of one training step of a run."""

    kind: str  # stl, mtl, gradnorm, mgda, se, or mask (tr and mr)
    task_steps: str | None
    sharing: float | None  # mask methods with compute "skip" only
    compute: str

    @property
    def label(self) -> str:
        parts = [self.kind if self.kind != "mask" else "tr/mr"]
        if self.task_steps is not None:
            parts.append(self.task_steps)
        if self.kind == "mask":
            parts.append(self.compute)
            parts.append("any p" if self.sharing is None else f"p={grid.fmt(self.sharing)}")
        return " ".join(parts)


@dataclass
class Group:
    """The runs of one dataset that share a :class:`Variant`, and what was measured for them."""

    variant: Variant
    runs: list[grid.Run] = field(default_factory=list)
    steps_per_second: float = math.nan
    eval_batches_per_second: float = math.nan
    timed_steps: int = 0
    cpu_seconds_per_step: float = math.nan
    faults_per_step: float = math.nan


@dataclass(frozen=True)
class Budget:
    """How long each variant is measured.

    Per dataset, the process is warmed up first (allocator, kernels): one reference-equivalent
    task pass with its Adam step and one evaluation batch, untimed. Per variant, one untimed
    warm-up (on a CPU, for methods with one pass per task, task 0's forward and backward pass
    and an Adam step; for the others, one pass of every head with their losses summed and an
    Adam step, without GradNorm's or MGDA-UB's gradients per task, measured to leave their
    timed step as fast and free of page faults; for fused steps a whole step), then real
    :meth:`~roaming.train.Trainer.step` calls, timed together until ``min_seconds`` have passed
    (at least one, at most ``max_steps``), then one evaluation batch. On a GPU, where steps take
    milliseconds, the warm-up is a whole step (the first pass of each task builds its channel
    lists and convolution plans), an untimed evaluation batch comes before the timed ones, which
    follow the same budget (:func:`time_evaluation`), and every timing synchronises the device
    first and last.
    """

    min_seconds: float = 0.5
    max_steps: int = 5


@dataclass(frozen=True)
class Shape:
    """A dataset's measured shapes and split sizes in a preset."""

    height: int
    width: int
    batch_size: int
    train_size: int
    eval_sizes: tuple[int, ...]  # one entry per evaluation pass of a run (evaluated epochs, final)


def variants_of(run: grid.Run, computes: Sequence[str]) -> list[Variant]:
    """The variants ``run`` is estimated under: one, or for mask methods one per compute mode
    of ``computes`` ("default": the mode the run resolves to, :func:`run_compute`)."""
    method = get_method(run.method)
    kind = "mask" if method.masked else run.method
    task_steps = run.protocol.get("task_steps") if method.task_specific else None
    if not method.masked:
        return [Variant(kind, task_steps, None, "dense")]
    chosen = [run_compute(run) if c == "default" else c for c in computes]
    return [
        Variant(kind, task_steps, run.sharing if compute == "skip" else None, compute)
        for compute in dict.fromkeys(chosen)
    ]


def run_compute(run: grid.Run) -> str | None:
    """The compute mode ``run`` trains with: its protocol's, or the resolved default."""
    return resolve(run.request(), run.dataset).compute


def group_runs(dataset: grid.Dataset, computes: Sequence[str]) -> list[Group]:
    """The dataset's runs grouped by variant, in the grid's order of first appearance."""
    groups: dict[Variant, Group] = {}
    for run in dataset.runs:
        for variant in variants_of(run, computes):
            groups.setdefault(variant, Group(variant)).runs.append(run)
    return list(groups.values())


def shape_of(dataset: grid.Dataset) -> Shape:
    """Image size, batch size and split sizes of ``dataset`` in its preset."""
    config = dataset.config
    fixtures = dataset.fixtures
    if fixtures is None:
        sizes = OFFICIAL_SIZES[dataset.name]
    else:
        defaults = _FIXTURE_SIZES[dataset.name]
        sizes = {split: fixtures.get(f"n_{split}", n) for split, n in defaults.items()}
    size = dataset.size
    if dataset.name == "celeba":
        height, width = resized_hw(*_CELEBA_SOURCE_HW, 64 if size is None else int(size))
    elif size is not None:
        height, width = size
    elif fixtures is not None:
        height, width = fixtures.get("height", 32), fixtures.get("width", 64)
    else:
        height, width = _DENSE_HW[dataset.name]
    protocol = get_dataset(dataset.name).protocol
    epochs = config["train"].get("epochs", protocol.epochs)
    interval = config["train"].get("eval_interval", protocol.eval_interval)
    evaluated = sum(is_evaluated(e, epochs, interval) for e in range(1, epochs + 1))
    evals = [sizes[protocol.eval_split]] * evaluated
    evals += [sizes[split] for split in config["evaluate"]["splits"]]
    batch = config["train"].get("batch_size", protocol.batch_size)
    return Shape(height, width, batch, sizes[protocol.train_split], tuple(evals))


def task_set(dataset: str, task_set_name: str, single: bool) -> TaskSet:
    """The dataset's task set (its real class and attribute names), or its first task alone."""
    if dataset == "celeba":
        groups, names = TASK_GROUPS, TASK_GROUP_NAMES
        if single:
            groups, names = groups[:1], names[:1]
        return AttributeTasks(ATTRIBUTE_NAMES, groups, names)
    tasks = DenseTasks(list(_DENSE_CLASSES[dataset]), task_set_name, dataset == "nyuv2")
    return tasks.select(0) if single else tasks


def synthetic_split(dataset: str, shape: Shape, device: torch.device, seed: int = 0) -> Split:
    """One batch of random images and targets in the prepared files' formats, on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    b, h, w = shape.batch_size, shape.height, shape.width
    images = torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=generator)
    if dataset == "celeba":
        targets = {
            "attributes": torch.randint(0, 2, (b, 40), dtype=torch.uint8, generator=generator)
        }
    else:
        classes = len(_DENSE_CLASSES[dataset])
        depth = torch.rand(b, h, w, generator=generator)
        depth[torch.rand(b, h, w, generator=generator) < 0.05] = 0.0  # invalid pixels
        normals = torch.randn(b, h, w, 3, generator=generator)
        targets = {
            "seg": torch.randint(-1, classes, (b, h, w), dtype=torch.int16, generator=generator),
            "depth": depth,
        }
        if dataset == "nyuv2":
            targets["normals"] = normals / normals.norm(dim=-1, keepdim=True)
    return Split(images, targets).to(device)


def trainer_config(
    dataset: str,
    method: str,
    protocol: Mapping[str, Any],
    *,
    sharing: float | None = None,
    task_steps: str | None = None,
    compute: str = "dense",
    **options: Any,
) -> RunConfig:
    """The resolved configuration a :class:`~roaming.train.Trainer` is built from, through
    :func:`roaming.config.resolve` as for a real run: the one place the bench (and
    ``benchmarks/train_step.py``) spells it out.

    ``protocol`` holds the preset's ``train`` options (left out: the dataset's reference
    protocol); ``options`` are further :class:`~roaming.config.TrainConfig` fields
    (``precision``, ``channels_last``, ``width``, ``threads``, …).
    """
    spec = get_method(method)
    keys = ("epochs", "batch_size", "lr", "width", "task_set", "bn", "precision", "channels_last")
    chosen = {key: protocol[key] for key in keys if key in protocol}
    request = TrainConfig(
        data=Path("bench.h5"),
        method=method,
        out=Path("bench"),
        sharing=sharing if spec.masked else None,
        task_steps=task_steps if spec.task_specific else None,
        task=0 if spec.single_task else None,
        compute=compute if spec.masked else None,
        **(chosen | options),
    )
    return resolve(request, dataset)


class ReferenceStep:
    """The authors' per-batch training algorithm, written out: T sequential dense masked
    passes in float32 on NCHW batches (what the CelebA loader's ``ToTensor`` gives; used for
    the dense sets too), an Adam step after each task (``per_task``, CelebA) or one on the
    accumulated gradients (``joint``, CityScapes and NYUv2); PyTorch's default Adam, gradients
    zeroed (not freed) as the reference's PyTorch 1.2 did."""

    def __init__(
        self, dataset: str, tasks: TaskSet, protocol: Mapping[str, Any], device: torch.device
    ) -> None:
        reference = get_dataset(dataset).protocol
        torch.manual_seed(0)
        self.model = build_model(
            reference.model,
            head_sizes=tasks.head_sizes,
            slot="mask",
            width=protocol.get("width", 1.0),
            channels_last=False,
        ).to(device)
        generator = torch.Generator().manual_seed(0)
        for _, slot, _ in masked_layers(self.model):
            shape = slot.mask.shape
            slot.mask.copy_(masks.initial_mask(*shape, reference.sharing["mr"], generator))
        self.tasks = tasks
        self.per_task = reference.task_steps == "per_task"
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=protocol.get("lr", reference.lr)
        )

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        images = batch["images"]
        self.optimizer.zero_grad(set_to_none=False)
        for t in range(len(self.tasks.names)):
            self.tasks.loss(t, self.model(images, t), batch).backward()
            if self.per_task:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=False)
        if not self.per_task:
            self.optimizer.step()

    def warm_up(self, batch: dict[str, torch.Tensor]) -> None:
        """One task's pass and Adam step and one fused evaluation batch, untimed: the process's
        allocator and kernels for the dataset's shapes, and Adam's state (without the fused
        batch the reference's first timed step page-faults its heap in: 130,000 minor faults
        on CelebA)."""
        self.tasks.loss(0, self.model(batch["images"], 0), batch).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
        with torch.no_grad():
            self.model.forward_all(batch["images"])


@dataclass(frozen=True)
class Timing:
    """Calls per second (wall clock), how many calls were timed, the process's CPU seconds per
    call (all threads; on a shared machine far steadier than the wall clock) and its minor page
    faults per call (NaN where ``getrusage`` is missing)."""

    rate: float
    count: int
    cpu_seconds: float
    faults: float


def timed(work: Callable[[], object], device: torch.device, budget: Budget) -> Timing:
    """Time calls of ``work`` as :class:`Budget` says."""
    _synchronise(device)
    faults, cpu = _minor_faults(), time.process_time()
    start, count = time.perf_counter(), 0
    while True:
        work()
        count += 1
        _synchronise(device)
        elapsed = time.perf_counter() - start
        if elapsed >= budget.min_seconds or count >= budget.max_steps:
            cpu_seconds = (time.process_time() - cpu) / count
            return Timing(count / elapsed, count, cpu_seconds, (_minor_faults() - faults) / count)


def _minor_faults() -> float:
    try:
        import resource
    except ImportError:  # not on this platform
        return math.nan
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def warm_up(trainer: Trainer, batch: dict[str, torch.Tensor]) -> None:
    """One untimed pass and an Adam step, which leave the allocator, the kernels and Adam's
    state ready for the timed steps (:class:`Budget`); on a GPU, and for fused steps, a whole
    step."""
    model, tasks = trainer.model, trainer.tasks
    if trainer.device.type != "cpu" or trainer.cfg.task_steps == "fused":
        trainer.step(batch)
        return
    images = batch["images"]
    if model.task_specific:
        loss = tasks.loss(0, model(images, 0), batch)
    else:  # GradNorm's and MGDA-UB's gradients per task reuse the pass's kernels and memory
        features = model.features(images, None)
        loss = sum(tasks.loss(t, model.head(features, t), batch) for t in range(len(tasks.names)))
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=False)


def time_evaluation(trainer: Trainer, split: Split, batch_size: int, budget: Budget) -> Timing:
    """Evaluation batches of ``trainer`` (:func:`~roaming.predict.predict`) as :class:`Budget`
    says: on a CPU one batch, whose kernels the training steps have warmed; on a GPU one
    untimed batch, then the budget's."""
    device = trainer.device

    def evaluate() -> object:
        return predict(trainer.model, trainer.tasks, split, batch_size)

    if device.type == "cpu":
        return timed(evaluate, device, Budget(0, 1))
    evaluate()
    return timed(evaluate, device, budget)


def _time_reference(
    dataset: str,
    tasks: TaskSet,
    protocol: Mapping[str, Any],
    batch: dict[str, torch.Tensor],
    device: torch.device,
    budget: Budget,
) -> Timing:
    """The reference-equivalent step's timing, after an untimed task pass that also warms the
    process up for the dataset's shapes."""
    reference = ReferenceStep(dataset, tasks, protocol, device)
    reference.warm_up(batch)
    return timed(lambda: reference.step(batch), device, budget)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class DatasetBench:
    """One dataset's measurements."""

    name: str
    shape: Shape
    epochs: int
    reference: Timing
    groups: list[Group]

    def hours(self, group: Group) -> float:
        """Estimated device-hours of the group's runs (module docstring)."""
        steps = math.ceil(self.shape.train_size / self.shape.batch_size) * self.epochs
        batches = sum(math.ceil(n / self.shape.batch_size) for n in self.shape.eval_sizes)
        seconds = steps / group.steps_per_second + batches / group.eval_batches_per_second
        return len(group.runs) * seconds / 3600

    def total(self, compute: str) -> float:
        """Device-hours of every run, mask runs under ``compute`` ("default": the mode each run
        resolves to, what the pipeline runs); NaN where that was not measured."""
        hours = 0.0
        for group in self.groups:
            if group.variant.kind != "mask":
                hours += self.hours(group)
        masked = [g for g in self.groups if g.variant.kind == "mask"]
        for run in {id(r): r for g in masked for r in g.runs}.values():
            wanted = run_compute(run) if compute == "default" else compute
            chosen = [g for g in masked if g.variant.compute == wanted and run in g.runs]
            hours += self.hours(chosen[0]) / len(chosen[0].runs) if chosen else math.nan
        return hours


def measure(
    dataset: grid.Dataset,
    device: torch.device,
    *,
    computes: Sequence[str] = DEFAULT_BENCH_COMPUTES,
    budget: Budget = Budget(),
    options: Mapping[str, Any] | None = None,
    report: Callable[[str], None] = print,
) -> DatasetBench:
    """Time the reference-equivalent step and every variant of ``dataset``'s runs."""
    shape = shape_of(dataset)
    protocol = dict(dataset.config["train"])
    split = synthetic_split(dataset.name, shape, device)
    batch = split.batch(torch.arange(shape.batch_size, device=device))
    tasks = task_set(dataset.name, dataset.task_set, single=False)
    ref = _time_reference(dataset.name, tasks, protocol, batch, device, budget)
    report(
        f"{dataset.name}: reference-equivalent {ref.rate:.3g} steps/s ({ref.count} timed, "
        f"{ref.cpu_seconds:.3g} CPU s/step, {ref.faults:.0f} minor page faults/step)"
    )
    groups = group_runs(dataset, computes)
    for group in groups:
        v = group.variant
        method = "mr" if v.kind == "mask" else v.kind
        single = get_method(method).single_task
        run_tasks = task_set(dataset.name, dataset.task_set, single)
        cfg = trainer_config(
            dataset.name,
            method,
            protocol,
            sharing=v.sharing,
            task_steps=v.task_steps,
            compute=v.compute,
            **({"device": str(device)} | dict(options or {})),
        )
        trainer = Trainer(cfg, run_tasks, device)
        warm_up(trainer, batch)
        steps = timed(lambda trainer=trainer: trainer.step(batch), device, budget)
        evaluation = time_evaluation(trainer, split, shape.batch_size, budget)
        group.steps_per_second, group.timed_steps = steps.rate, steps.count
        group.cpu_seconds_per_step, group.faults_per_step = steps.cpu_seconds, steps.faults
        group.eval_batches_per_second = evaluation.rate
        report(
            f"{dataset.name}: {v.label}: {steps.rate:.3g} steps/s ({steps.count} timed, "
            f"{steps.cpu_seconds:.3g} CPU s/step, {steps.faults:.0f} minor page faults/step), "
            f"{evaluation.rate:.3g} eval batches/s"
        )
        del trainer
    epochs = protocol.get("epochs", get_dataset(dataset.name).protocol.epochs)
    return DatasetBench(dataset.name, shape, epochs, ref, groups)


def table(results: Iterable[DatasetBench], computes: Sequence[str]) -> str:
    """The cost table (markdown): one row per variant, the reference, and totals.

    "× reference" is the ratio of throughputs (wall clock), "× ref. CPU" the same from CPU
    seconds per step (steadier on a shared machine).
    """
    rows = [
        "| dataset | variant | runs | epochs | steps/s | × reference | CPU s/step | × ref. CPU "
        "| page faults/step | device-hours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    totals = dict.fromkeys(computes, 0.0)
    blank = "| " * 7
    for bench in results:
        shape, ref = bench.shape, bench.reference
        rows.append(
            f"| {bench.name} {shape.height}×{shape.width}, batch {shape.batch_size} "
            f"| reference-equivalent | | | {ref.rate:.3g} | 1.00 | {ref.cpu_seconds:.3g} | 1.00 "
            f"| {ref.faults:.0f} | |"
        )
        for g in bench.groups:
            ratio = g.steps_per_second / ref.rate
            cpu_ratio = ref.cpu_seconds / g.cpu_seconds_per_step
            rows.append(
                f"| {bench.name} | {g.variant.label} | {len(g.runs)} | {bench.epochs} "
                f"| {g.steps_per_second:.3g} | {ratio:.2f} | {g.cpu_seconds_per_step:.3g} "
                f"| {cpu_ratio:.2f} | {g.faults_per_step:.0f} | {bench.hours(g):.4g} |"
            )
        for compute in totals:
            hours = bench.total(compute)
            totals[compute] += hours
            rows.append(f"| {bench.name} | **{_total_label(compute)}** {blank}| {hours:.4g} |")
    for compute, hours in totals.items():
        rows.append(f"| all | **{_total_label(compute)}** {blank}| {hours:.4g} |")
    return "\n".join(rows)


def _total_label(compute: str) -> str:
    if compute == "default":
        return "total, mask runs as the pipeline runs them"
    return f"total, mask runs {compute}"


def run_bench(
    params: Path,
    preset: str | None,
    device: torch.device,
    *,
    datasets: Sequence[str] | None = None,
    computes: Sequence[str] = DEFAULT_BENCH_COMPUTES,
    budget: Budget = Budget(),
    options: Mapping[str, Any] | None = None,
) -> str:
    """Measure the preset of ``params`` (its active one unless ``preset``) and return the table."""
    config = grid.load(params)
    if preset is not None:
        config = {**config, "preset": preset}
    plan = grid.plan(config)
    chosen = list(plan.datasets) if datasets is None else list(datasets)
    results = [
        measure(plan.datasets[name], device, computes=computes, budget=budget, options=options)
        for name in chosen
    ]
    return table(results, computes)
