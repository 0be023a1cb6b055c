"""One training loop for every dataset and method, resumable and deterministic.

A run directory holds the whole state of one run:

- ``config.json``: the resolved configuration;
- ``checkpoint.pt``: the latest state (model, optimizer, masks and their history, counters, every
  random generator), rewritten atomically after each epoch; re-running the same command resumes
  from it, a different configuration starts over;
- ``history.csv``: one row per (epoch, split) with every metric;
- ``masks.h5`` (task routing, roaming): every masked layer's mask after each update event;
- ``model.pt``: the final weights and masks, written once training is complete.

Every random choice flows from the run's seed through three independent generators (weights,
data order, masks), all saved in the checkpoint, so on a CPU a resumed run is bitwise identical
to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from roaming import __version__, checkpoint
from roaming.atomic import atomic_path, write_json
from roaming.data.splits import Split, load_split, read_attributes
from roaming.datasets import get_dataset
from roaming.errors import ConfigError
from roaming.methods import Method, get_method
from roaming.methods.roaming import Roaming
from roaming.methods.weighting import DEFAULT_ALPHA, make_weighting
from roaming.models import MultiTaskModel, build_model, masked_layers
from roaming.tasks import TaskSet

STRATEGIES = ("random", "least_align")
TASK_STEPS = ("per_task", "joint", "fused")
BN_MODES = ("batch", "running")


@dataclass
class TrainConfig:
    """What a user asks for; ``None`` means the dataset's reference protocol value."""

    data: Path
    method: str
    out: Path
    sharing: float | None = None
    update_interval: float | None = None
    strategy: str | None = None
    update_ratio: float | None = None
    task_steps: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    width: float = 1.0
    seed: int = 0
    task: int | None = None
    alpha: float | None = None
    task_set: str = "paper"
    bn: str = "batch"
    device: str = "auto"


def resolve(config: TrainConfig) -> dict[str, Any]:
    """Validate ``config`` and fill in the dataset's protocol: the dict saved as config.json.

    Options that do not apply to the method are rejected rather than silently ignored, so a
    configuration always says what actually ran.
    """
    method = get_method(config.method)
    attrs = read_attributes(config.data)
    spec = get_dataset(attrs["dataset"])
    protocol = spec.protocol

    def reject_unless(applies: bool, name: str, value: Any, why: str) -> None:
        if value is not None and not applies:
            raise ConfigError(f"--{name} does not apply to method {method.name!r} ({why})")

    reject_unless(method.masked, "sharing", config.sharing, "only tr and mr use masks")
    for name in ("update_interval", "strategy", "update_ratio"):
        reject_unless(method.roams, name.replace("_", "-"), getattr(config, name), "only mr roams")
    reject_unless(
        method.task_specific, "task-steps", config.task_steps, "it shares one forward pass"
    )
    reject_unless(method.single_task, "task", config.task, "only stl trains one task")
    reject_unless(method.weighting == "gradnorm", "alpha", config.alpha, "only gradnorm has it")
    if method.single_task and config.task is None:
        raise ConfigError("method 'stl' needs --task K (the task index to train)")

    resolved: dict[str, Any] = {
        "dataset": spec.name,
        "data": str(config.data),
        "data_fingerprint": attrs.get("fingerprint"),
        "method": method.name,
        "model": protocol.model,
        "sharing": None,
        "update_interval": None,
        "update_clock": None,
        "strategy": None,
        "update_ratio": None,
        "task_steps": None,
        "epochs": _given(config.epochs, protocol.epochs),
        "batch_size": _given(config.batch_size, protocol.batch_size),
        "lr": _given(config.lr, protocol.lr),
        "width": config.width,
        "seed": config.seed,
        "task": config.task,
        "alpha": _given(config.alpha, DEFAULT_ALPHA) if method.weighting == "gradnorm" else None,
        "task_set": config.task_set,
        "bn": config.bn,
        "device": config.device,
        "version": __version__,
    }
    if method.masked:
        resolved["sharing"] = _given(config.sharing, protocol.sharing[method.name])
    if method.roams:
        resolved["update_interval"] = _given(config.update_interval, protocol.update_interval)
        resolved["update_clock"] = protocol.update_clock
        resolved["strategy"] = _given(config.strategy, "random")
        resolved["update_ratio"] = _given(config.update_ratio, 1.0)
    if method.task_specific:
        resolved["task_steps"] = _given(config.task_steps, protocol.task_steps)
    _validate(resolved)
    spec.tasks(attrs, config.task, config.task_set)  # rejects a task index out of range
    return resolved


def _given(value: Any, default: Any) -> Any:
    """``value`` unless it was left out (``None``): 0 is a value to validate, not a default."""
    return default if value is None else value


def _validate(cfg: dict[str, Any]) -> None:
    """Range checks with messages naming the option."""
    checks = [
        ("sharing", cfg["sharing"] is None or 0 < cfg["sharing"] <= 1, "in (0, 1]"),
        ("update-ratio", cfg["update_ratio"] is None or 0 < cfg["update_ratio"] <= 1, "in (0, 1]"),
        ("update-interval", cfg["update_interval"] is None or cfg["update_interval"] > 0, "> 0"),
        ("strategy", cfg["strategy"] in (None, *STRATEGIES), f"one of {', '.join(STRATEGIES)}"),
        ("task-steps", cfg["task_steps"] in (None, *TASK_STEPS), f"one of {', '.join(TASK_STEPS)}"),
        ("epochs", cfg["epochs"] >= 1, ">= 1"),
        ("batch-size", cfg["batch_size"] >= 1, ">= 1"),
        ("lr", cfg["lr"] > 0, "> 0"),
        ("alpha", cfg["alpha"] is None or cfg["alpha"] >= 0, ">= 0"),
        ("width", cfg["width"] > 0, "> 0"),
        ("bn", cfg["bn"] in BN_MODES, f"one of {', '.join(BN_MODES)}"),
        (
            "device",
            cfg["device"] in ("auto", "cpu") or cfg["device"].startswith("cuda"),
            "auto, cpu or cuda[:N]",
        ),
    ]
    for name, ok, expected in checks:
        if not ok:
            key = name.replace("-", "_")
            raise ConfigError(f"--{name} must be {expected}, got {cfg[key]!r}")
    if cfg["update_clock"] == "epochs" and cfg["update_interval"] != int(cfg["update_interval"]):
        raise ConfigError(
            f"--update-interval counts epochs for {cfg['dataset']}: give a whole number, "
            f"got {cfg['update_interval']!r}"
        )


def pick_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for weights, data order and masks, all from the run's seed."""
    weights, data, masks = np.random.SeedSequence(seed).generate_state(3)
    return int(weights), int(data), int(masks)


class Trainer:
    """The model, optimizer and masks of one run, and how to step, evaluate and checkpoint them."""

    def __init__(
        self, cfg: dict[str, Any], tasks: TaskSet, device: torch.device, *, training: bool = True
    ) -> None:
        self.cfg = cfg
        self.tasks = tasks
        self.device = device
        self.method: Method = get_method(cfg["method"])
        weight_seed, data_seed, mask_seed = _seeds(cfg["seed"])
        torch.manual_seed(weight_seed)
        self.model: MultiTaskModel = build_model(
            cfg["model"],
            head_sizes=tasks.head_sizes,
            slot=self.method.slot,
            width=cfg["width"],
            bn_running_stats=cfg["bn"] == "running",
            compute=cfg.get("compute") or "dense",
            precision=cfg.get("precision") or "fp32",
            channels_last=cfg.get("channels_last"),
        ).to(device)
        self.weighting = make_weighting(
            self.method.weighting,
            len(tasks.names),
            self.model.last_shared_conv.weight,
            cfg.get("alpha"),
        )
        parameters = [*self.model.parameters(), *self.weighting.parameters()]
        # foreach: one multi-tensor update instead of a Python loop over tensors (the CUDA
        # default; on a CPU ~20% faster per-task steps, which update every task's SE modules).
        self.optimizer = (
            torch.optim.Adam(parameters, lr=cfg["lr"], foreach=True) if training else None
        )
        for parameter in parameters if training else ():
            # Zero (not absent) gradients from the start: Adam then treats a parameter that a
            # task's pass does not reach the same way on the first batch, later batches and after
            # a resume, which keeps resumed runs bitwise identical.
            parameter.grad = torch.zeros_like(parameter)
        self.data_generator = torch.Generator().manual_seed(data_seed)
        self.roaming: Roaming | None = None
        if self.method.masked:
            self.roaming = Roaming(
                masked_layers(self.model),
                roams=self.method.roams,
                strategy=cfg["strategy"] or "random",
                update_ratio=cfg["update_ratio"] or 1.0,
                generator=torch.Generator().manual_seed(mask_seed),
            )
            self.roaming.initialise(cfg["sharing"])
        self.epoch = 0
        self.iteration = 0
        self.history: list[dict[str, Any]] = []

    # -- one batch ---------------------------------------------------------------------------

    def step(self, batch: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Train on one batch; returns each head's (output, loss), detached.

        Shared-feature methods compute the representation once and take one step on the task
        losses as their weighting combines them (sum, GradNorm, MGDA-UB). Task-specific ones run
        a forward pass per task, then either step after each task (``per_task``, the CelebA
        reference: T Adam steps per batch) or once on the accumulated gradients (``joint``).
        ``fused`` takes the joint step after one fused pass of all tasks (the same losses, every
        conv run once on T copies of the batch, T times the activation memory).
        The gradients are zeroed, not freed, between per-task steps, as in the reference: Adam
        then still moves parameters that a task's pass did not reach.
        """
        images, num_tasks = batch["images"], len(self.tasks.names)
        results = []
        if not self.model.task_specific or self.cfg["task_steps"] == "fused":
            self.optimizer.zero_grad(set_to_none=False)
            if self.model.task_specific:  # fused: every task in one pass, losses summed
                features = None
                outputs = self.model.forward_all(images)
            else:
                features = self.model.features(images, None)
                outputs = [self.model.head(features, t) for t in range(num_tasks)]
            losses = [self.tasks.loss(t, out, batch) for t, out in enumerate(outputs)]
            self.weighting.backward(torch.stack(losses), features)
            self.optimizer.step()
            self.weighting.after_step()
            return [(o.detach(), v.detach()) for o, v in zip(outputs, losses, strict=True)]
        per_task = self.cfg["task_steps"] == "per_task"
        if not per_task:
            self.optimizer.zero_grad(set_to_none=False)
        for t in range(num_tasks):
            if per_task:
                self.optimizer.zero_grad(set_to_none=False)
            output = self.model(images, t)
            loss = self.tasks.loss(t, output, batch)
            loss.backward()
            if per_task:
                self.optimizer.step()
            results.append((output.detach(), loss.detach()))
        if not per_task:
            self.optimizer.step()
        return results

    # -- epochs ------------------------------------------------------------------------------

    def train_epoch(self, split: Split, progress: bool) -> dict[str, float]:
        """One pass over ``split`` in a seeded random order, with the roaming events it holds."""
        self.model.train()
        order = torch.randperm(len(split), generator=self.data_generator).to(self.device)
        batches = order.split(self.cfg["batch_size"])
        period = None
        if self.roaming is not None and self.cfg["update_clock"] == "epoch_fraction":
            period = math.floor(self.cfg["update_interval"] * len(batches)) + 1
        tracker = _Tracker(self.tasks)
        bar = tqdm(
            batches,
            desc=f"epoch {self.epoch + 1}/{self.cfg['epochs']}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        for index in bar:
            batch = split.batch(index)
            tracker.add(batch, self.step(batch))
            self.iteration += 1
            if period is not None and self.iteration % period == 0:
                self.roaming.update(self.iteration)
            bar.set_postfix(tracker.running_losses(), refresh=False)
        if self.roaming is not None and self.cfg["update_clock"] == "epochs":
            interval = int(self.cfg["update_interval"])
            if self.epoch >= interval and self.epoch % interval == 0:
                self.roaming.update(self.iteration)
        row = tracker.compute()
        weights = self.weighting.epoch_weights()
        if weights is not None:  # GradNorm's weights at the epoch's end, MGDA-UB's mean α
            names = self.tasks.names
            row |= {f"weight/{n}": w for n, w in zip(names, weights.tolist(), strict=True)}
        return row

    @torch.no_grad()
    def predict(self, split: Split) -> tuple[dict[str, float], list[torch.Tensor]]:
        """Metrics of the model on ``split`` (in file order) and every head's outputs.

        With batch-statistics BatchNorm (the reference) outputs depend on the batch, so the
        evaluation batches are the training batch size, in file order. Task-specific models
        evaluate all tasks in one fused pass per batch (the same outputs as T passes).
        """
        self.model.eval()
        tracker = _Tracker(self.tasks)
        outputs: list[list[torch.Tensor]] = [[] for _ in self.tasks.names]
        for index in torch.arange(len(split), device=self.device).split(self.cfg["batch_size"]):
            batch = split.batch(index)
            heads = self.model.forward_all(batch["images"])
            losses = [self.tasks.loss(t, out, batch) for t, out in enumerate(heads)]
            tracker.add(batch, list(zip(heads, losses, strict=True)))
            for store, out in zip(outputs, heads, strict=True):
                store.append(out.cpu())
        self.model.train()
        return tracker.compute(), [torch.cat(store) for store in outputs]

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The complete resumable state, loadable with ``weights_only=True``."""
        state = {
            "config": self.cfg,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()},
        }
        if self.roaming is not None:
            state["roaming"] = self.roaming.state_dict()
        state["weighting"] = self.weighting.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.data_generator.set_state(state["rng"]["data"])
        if self.roaming is not None:
            self.roaming.load_state_dict(state["roaming"])
        if "weighting" in state:  # checkpoints from before the loss weightings have none
            self.weighting.load_state_dict(state["weighting"])
        self.epoch = state["epoch"]
        self.iteration = state["iteration"]
        self.history = list(state["history"])


class _Tracker:
    """Sample-weighted task losses and the task set's metrics over one pass."""

    def __init__(self, tasks: TaskSet) -> None:
        self.tasks = tasks
        self.meter = tasks.meter()
        self.loss_sums = torch.zeros(len(tasks.names), dtype=torch.float64)
        self.samples = 0

    def add(
        self, batch: dict[str, torch.Tensor], results: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        size = batch["images"].shape[0]
        for t, (output, _) in enumerate(results):
            self.meter.update(t, output, batch)
        self.loss_sums += torch.stack([loss for _, loss in results]).double().cpu() * size
        self.samples += size

    def running_losses(self) -> dict[str, str]:
        means = self.loss_sums / max(self.samples, 1)
        return {
            name: f"{value:.3f}"
            for name, value in zip(self.tasks.names, means.tolist(), strict=True)
        }

    def compute(self) -> dict[str, float]:
        means = (self.loss_sums / self.samples).tolist()
        losses = {
            f"loss/{name}": value for name, value in zip(self.tasks.names, means, strict=True)
        }
        return {"loss": float(sum(means))} | losses | self.meter.compute()


# -- the run directory --------------------------------------------------------------------------


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a configuration that decide the result (not where or on what it runs).

    Options that do not apply (``None``) are left out, so a checkpoint written before an option
    existed still matches a configuration that leaves it unset."""
    ignored = ("device", "data", "version")
    return {k: v for k, v in cfg.items() if k not in ignored and v is not None}


def _write_outputs(run_dir: Path, trainer: Trainer) -> None:
    """history.csv and masks.h5 from the trainer's state, then the checkpoint."""
    with atomic_path(run_dir / "history.csv") as tmp:
        pd.DataFrame(trainer.history).to_csv(tmp, index=False)
    if trainer.roaming is not None:
        trainer.roaming.write(run_dir / "masks.h5")
    checkpoint.save(run_dir / "checkpoint.pt", trainer.state_dict())


# The headline metrics an epoch's summary line shows, when the task set reports them.
_HEADLINE = {"fscore": "F", "miou": "mIoU", "depth_abs_err": "depth", "normal_mean": "normal"}


def _summary(epoch: int, epochs: int, rows: dict[str, dict[str, Any]], trainer: Trainer) -> str:
    """One line per epoch: each split's loss and headline metrics, r(c), time."""
    parts = [f"epoch {epoch}/{epochs}"]
    for split, row in rows.items():
        shown = [f"{label} {row[key]:.4f}" for key, label in _HEADLINE.items() if key in row]
        parts.append(" ".join([f"{split} loss {row['loss']:.4f}", *shown]))
    if trainer.roaming is not None and trainer.method.roams:
        parts.append(f"r(c) {trainer.roaming.progress():.2f}")
    parts.append(f"{rows['train']['seconds']:.1f} s")
    return " | ".join(parts)


def train(config: TrainConfig, *, progress: bool = True, restart: bool = False) -> Path:
    """Train (or resume, or confirm) the run in ``config.out``; returns the run directory."""
    cfg = resolve(config)
    run_dir = Path(config.out)
    state = None
    checkpoint_path = run_dir / "checkpoint.pt"
    if checkpoint_path.exists() and not restart:
        state = checkpoint.load(checkpoint_path)
        if _comparable(state["config"]) != _comparable(cfg):
            print(f"{run_dir}: configuration changed since the checkpoint; starting over")
            state = None
    if state is not None and state["epoch"] >= cfg["epochs"] and (run_dir / "model.pt").exists():
        print(f"{run_dir}: already complete ({cfg['epochs']} epochs); nothing to do")
        return run_dir

    device = pick_device(cfg["device"])
    attrs = read_attributes(config.data)
    spec = get_dataset(cfg["dataset"])
    tasks = spec.tasks(attrs, cfg["task"], cfg["task_set"])
    trainer = Trainer(cfg, tasks, device)
    if state is not None:
        trainer.load_state_dict(state)
        if trainer.epoch:
            print(f"{run_dir}: resuming after epoch {trainer.epoch}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg)

    protocol = spec.protocol
    train_split = load_split(config.data, protocol.train_split, tasks.fields).to(device)
    eval_split = load_split(config.data, protocol.eval_split, tasks.fields).to(device)
    if len(train_split) == 0:
        raise ConfigError(f"{config.data}: the {protocol.train_split!r} split is empty")
    while trainer.epoch < cfg["epochs"]:
        start = time.perf_counter()
        train_row = trainer.train_epoch(train_split, progress)
        seconds = time.perf_counter() - start
        trainer.epoch += 1
        rows = {"train": train_row | {"seconds": seconds}}
        if len(eval_split):
            rows[protocol.eval_split] = trainer.predict(eval_split)[0] | {"seconds": 0.0}
        for split, row in rows.items():
            extra = {"update_progress": trainer.roaming.progress()} if trainer.roaming else {}
            trainer.history.append(
                {"epoch": trainer.epoch, "split": split, "iteration": trainer.iteration}
                | extra
                | row
            )
        _write_outputs(run_dir, trainer)
        print(_summary(trainer.epoch, cfg["epochs"], rows, trainer), flush=True)
    checkpoint.save(run_dir / "model.pt", {"config": cfg, "model": trainer.model.state_dict()})
    return run_dir


def load_trained(run_dir: str | Path, data: str | Path, device: torch.device) -> Trainer:
    """The finished model of ``run_dir`` (its ``model.pt``), set up to predict on ``data``."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").exists():
        raise ConfigError(f"{run_dir}: no model.pt; the run has not finished training")
    state = checkpoint.load(run_dir / "model.pt")
    cfg = state["config"]
    attrs = read_attributes(data)
    if attrs["dataset"] != cfg["dataset"]:
        raise ConfigError(
            f"{data} holds {attrs['dataset']!r} but run {run_dir} was trained on {cfg['dataset']!r}"
        )
    tasks = get_dataset(cfg["dataset"]).tasks(attrs, cfg["task"], cfg["task_set"])
    trainer = Trainer(cfg, tasks, device, training=False)
    trainer.model.load_state_dict(state["model"])
    return trainer


__all__ = ["TrainConfig", "Trainer", "load_trained", "pick_device", "resolve", "train"]
