"""A run's configuration: what a user asks for, and the resolved, typed record of what ran.

:class:`TrainConfig` is the request (``None`` = the dataset's reference protocol value);
:func:`resolve` validates it and fills in the protocol, giving a frozen :class:`RunConfig`, the
one record that ``config.json``, the checkpoint and ``model.pt`` hold. The grid resolves every run
of ``params.yaml`` the same way without data, so ``snakemake -n`` rejects what ``roaming train``
would. Torch-free on purpose: Snakemake imports this at every start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from roaming import __version__
from roaming.errors import ConfigError
from roaming.methods import get_method
from roaming.protocol import get_protocol, is_evaluated, task_names

STRATEGIES = ("random", "least_align")
TASK_STEPS = ("per_task", "joint", "fused")
BN_MODES = ("batch", "running")
COMPUTE_MODES = ("dense", "skip")
PRECISIONS = ("fp32", "bf16")
CHANNELS_LAST = ("auto", "on", "off")
DATA_SOURCES = ("synthetic", "real")
# How `roaming bench` may estimate mask runs: all dense, all skipping, or each in the mode it
# trains with ("default"); unless told, the last, what the pipeline runs.
BENCH_COMPUTES = ("dense", "skip", "default")
DEFAULT_BENCH_COMPUTES = ("default",)


@dataclass(frozen=True)
class TrainConfig:
    """What a user asks for; ``None`` means the dataset's reference protocol value.

    ``task`` is a task index or name (STL). ``threads`` left out means every core this process
    may use; it is recorded either way. ``data_source`` (synthetic | real), when given, is what
    the prepared file must hold: the pipeline passes it so a preset never trains on the other
    kind of data. ``compute`` left out is :func:`default_compute`. ``precision``,
    ``channels_last`` and ``compute`` decide how a pass runs, not what it computes (up to float
    rounding: they are recorded, since the bits differ).
    """

    data: Path
    method: str
    out: Path
    sharing: float | None = None
    update_interval: float | None = None
    strategy: str | None = None
    update_ratio: float | None = None
    task_steps: str | None = None
    epochs: int | None = None
    eval_interval: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    width: float = 1.0
    seed: int = 0
    task: int | str | None = None
    alpha: float | None = None
    task_set: str = "paper"
    bn: str = "batch"
    compute: str | None = None
    precision: str = "fp32"
    channels_last: str = "auto"
    device: str = "auto"
    threads: int | None = None
    data_source: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run: every value that decides its result, and where
    it ran. Options that do not apply to the method are ``None``."""

    dataset: str
    data: str
    data_fingerprint: str | None
    data_source: str | None
    method: str
    model: str
    sharing: float | None
    update_interval: float | None
    update_clock: str | None
    strategy: str | None
    update_ratio: float | None
    task_steps: str | None
    epochs: int
    eval_interval: int | None
    batch_size: int
    lr: float
    width: float
    seed: int
    task: int | None
    alpha: float | None
    task_set: str
    bn: str
    compute: str | None
    precision: str | None
    channels_last: str | None
    device: str
    threads: int | None
    code: str | None
    version: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, in field order: ``config.json`` and the checkpoints' ``config``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Read a recorded configuration; keys a record predates are ``None``, unknown keys
        (a newer or edited record) a ``ValueError``."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
        return cls(**{name: values.get(name) for name in known})

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run: everything but where it ran and the data's path.

        The code fingerprint and version are part of it, so a checkpoint written by other
        training code is never resumed or taken as finished."""
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "data")}

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the model is evaluated after ``epoch`` (1-based): every ``eval_interval``
        epochs and after the last (a record predating the option: every epoch)."""
        return is_evaluated(epoch, self.epochs, self.eval_interval or 1)

    def differences(self, other: RunConfig) -> list[str]:
        """``key: ours → theirs`` for each identity value that differs."""
        mine, theirs = self.identity(), other.identity()
        return [f"{k}: {theirs[k]!r} → {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def available_threads() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Modules that never run during training, so editing them must not restart or invalidate runs.
_NOT_TRAINING_CODE = (
    "allocator.py",
    "bench.py",
    "cli.py",
    "evaluate.py",
    "grid.py",
    "report.py",
    "report",
)


@functools.cache
def code_fingerprint() -> str:
    """A digest of the package's training code (every module but those in
    ``_NOT_TRAINING_CODE``): part of a run's identity (:meth:`RunConfig.identity`)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in _NOT_TRAINING_CODE:
            continue
        digest.update(f"{relative.as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _given(value: Any, default: Any) -> Any:
    """``value`` unless it was left out (``None``): 0 is a value to validate, not a default."""
    return default if value is None else value


# Where skipping masked channels is the faster pass, as `roaming bench` measured it on a 2-core
# CPU (2 threads, fp32, CPU seconds per step against the dense pass). Per architecture, the
# sharing ratios below which it gains at the paper's width (1): ResNet-18 at CelebA's shapes
# 1.15× at p = 0.7, 1.00× at p = 0.8, 0.89× at p = 0.9 (conv1, the downsample and the heads read
# the residual stream, a union of masks, so little is skipped); SegNet 1.9× at p = 0.6, 1.07×
# at p = 0.9. And the width multiplier from which the gathers of the skipped weights pay for
# themselves: at width 0.5 skipping at p = 0.5 is 1.43× (ResNet-18) and 1.72× (SegNet) faster,
# at 0.125 (the demo's) 0.87× and 0.74×, slower.
_SKIP_BELOW = {"resnet18": 0.75, "segnet": 1.0}
_SKIP_MIN_WIDTH = 0.5


# ResNet-18's strided 1×1 (downsample) convolutions read 64·width channels, fewer when it skips:
# below 16 their NHWC backward on a CPU corrupts the heap (uxlfoundation/oneDNN#6035), so
# `--channels-last on` is refused there (the `auto` rule keeps them NCHW: roaming.models.blocks).
_NHWC_SAFE_RESNET_WIDTH = 0.25


def default_compute(model: str, bn: str, sharing: float, width: float) -> str:
    """Skip masked channels where that is exact and measured faster: batch statistics (a dense
    pass also updates masked channels' running statistics), p below the architecture's
    threshold (at p = 1 nothing is masked) and a width multiplier of at least 0.5."""
    fast = sharing < _SKIP_BELOW[model] and width >= _SKIP_MIN_WIDTH
    return "skip" if bn == "batch" and fast else "dense"


def task_index(dataset: str, task_set: str, task: int | str) -> int:
    """A task given by index or name (``--task 2``, ``--task depth``) as its index."""
    names = task_names(dataset, task_set)
    if isinstance(task, str) and not task.lstrip("-").isdigit():
        if task not in names:
            raise ConfigError(f"--task {task!r} is not a task of {dataset}: {', '.join(names)}")
        return names.index(task)
    index = int(task)
    if not 0 <= index < len(names):
        raise ConfigError(f"--task must be in 0..{len(names) - 1} or a name, got {task}")
    return index


def resolve(
    request: TrainConfig,
    dataset: str,
    *,
    fingerprint: str | None = None,
    data_source: str | None = None,
) -> RunConfig:
    """Validate ``request`` for ``dataset`` and fill in its protocol.

    Options that do not apply to the method are rejected rather than silently ignored, so a
    configuration always says what actually ran. ``fingerprint`` and ``data_source`` describe
    the prepared file (``None`` when resolving without data, as the grid does).
    """
    method = get_method(request.method)
    protocol = get_protocol(dataset)

    def reject_unless(applies: bool, name: str, value: Any, why: str) -> None:
        if value is not None and not applies:
            raise ConfigError(f"--{name} does not apply to method {method.name!r} ({why})")

    reject_unless(method.masked, "sharing", request.sharing, "only tr and mr use masks")
    for name in ("update_interval", "strategy", "update_ratio"):
        value = getattr(request, name)
        reject_unless(method.roams, name.replace("_", "-"), value, "only mr roams")
    reject_unless(
        method.task_specific, "task-steps", request.task_steps, "it shares one forward pass"
    )
    reject_unless(method.single_task, "task", request.task, "only stl trains one task")
    reject_unless(method.weighting == "gradnorm", "alpha", request.alpha, "only gradnorm has it")
    reject_unless(method.masked, "compute", request.compute, "only tr and mr mask channels")
    if method.single_task and request.task is None:
        raise ConfigError("method 'stl' needs --task K (the task index or name to train)")
    task_names(dataset, request.task_set)  # rejects an unknown task set
    task = None if request.task is None else task_index(dataset, request.task_set, request.task)
    roams, masked = method.roams, method.masked
    sharing = _given(request.sharing, protocol.sharing.get(method.name)) if masked else None
    compute = None
    if masked:
        compute = _given(
            request.compute, default_compute(protocol.model, request.bn, sharing, request.width)
        )
    config = RunConfig(
        dataset=dataset,
        data=str(request.data),
        data_fingerprint=fingerprint,
        data_source=data_source,
        method=method.name,
        model=protocol.model,
        sharing=sharing,
        update_interval=_given(request.update_interval, protocol.update_interval)
        if roams
        else None,
        update_clock=protocol.update_clock if roams else None,
        strategy=_given(request.strategy, "random") if roams else None,
        update_ratio=_given(request.update_ratio, 1.0) if roams else None,
        task_steps=_given(request.task_steps, protocol.task_steps)
        if method.task_specific
        else None,
        epochs=_given(request.epochs, protocol.epochs),
        eval_interval=_given(request.eval_interval, protocol.eval_interval),
        batch_size=_given(request.batch_size, protocol.batch_size),
        lr=_given(request.lr, protocol.lr),
        width=request.width,
        seed=request.seed,
        task=task,
        alpha=_given(request.alpha, 0.5) if method.weighting == "gradnorm" else None,
        task_set=request.task_set,
        bn=request.bn,
        compute=compute,
        precision=request.precision,
        channels_last=request.channels_last,
        device=request.device,
        threads=_given(request.threads, available_threads()),
        code=code_fingerprint(),
        version=__version__,
    )
    check(config)
    if request.data_source is not None and request.data_source not in DATA_SOURCES:
        raise ConfigError(
            f"--data-source must be one of {', '.join(DATA_SOURCES)}, got {request.data_source!r}"
        )
    return config


def check(config: RunConfig) -> None:
    """Range checks, with messages naming the option."""
    checks = [
        ("sharing", config.sharing is None or 0 < config.sharing <= 1, "in (0, 1]"),
        (
            "update-ratio",
            config.update_ratio is None or 0 < config.update_ratio <= 1,
            "in (0, 1]",
        ),
        (
            "update-interval",
            config.update_interval is None or config.update_interval > 0,
            "> 0",
        ),
        ("strategy", config.strategy in (None, *STRATEGIES), f"one of {', '.join(STRATEGIES)}"),
        (
            "task-steps",
            config.task_steps in (None, *TASK_STEPS),
            f"one of {', '.join(TASK_STEPS)}",
        ),
        ("epochs", config.epochs >= 1, ">= 1"),
        ("eval-interval", config.eval_interval is None or config.eval_interval >= 1, ">= 1"),
        ("batch-size", config.batch_size >= 1, ">= 1"),
        ("lr", config.lr > 0, "> 0"),
        ("alpha", config.alpha is None or config.alpha >= 0, ">= 0"),
        ("width", config.width > 0, "> 0"),
        ("bn", config.bn in BN_MODES, f"one of {', '.join(BN_MODES)}"),
        (
            "compute",
            config.compute in (None, *COMPUTE_MODES),
            f"one of {', '.join(COMPUTE_MODES)}",
        ),
        ("precision", config.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        (
            "channels-last",
            config.channels_last in CHANNELS_LAST,
            f"one of {', '.join(CHANNELS_LAST)}",
        ),
        (
            "device",
            config.device in ("auto", "cpu") or config.device.startswith("cuda"),
            "auto, cpu or cuda[:N]",
        ),
        ("threads", config.threads is None or config.threads >= 1, ">= 1"),
    ]
    for name, ok, expected in checks:
        if not ok:
            value = getattr(config, name.replace("-", "_"))
            raise ConfigError(f"--{name} must be {expected}, got {value!r}")
    if config.compute == "skip" and config.bn == "running":
        raise ConfigError(
            "--compute skip is not exact with --bn running (a dense pass also updates the "
            "running statistics of masked channels): use --compute dense"
        )
    if config.channels_last == "on" and not config.device.startswith("cuda"):
        narrow = config.compute == "skip" or config.width < _NHWC_SAFE_RESNET_WIDTH
        if config.model == "resnet18" and narrow:
            raise ConfigError(
                "--channels-last on is refused on a CPU for ResNet-18 when it skips or below width "
                "0.25: its strided 1×1 convolutions may read fewer than 16 channels, whose NHWC "
                "backward corrupts the heap (uxlfoundation/oneDNN#6035); use --channels-last "
                "auto (or name the GPU: --device cuda)"
            )
    interval = config.update_interval
    if config.update_clock == "epochs" and interval != int(interval):
        raise ConfigError(
            f"--update-interval counts epochs for {config.dataset}: give a whole number, "
            f"got {interval!r}"
        )
