"""One training loop for every dataset and method, resumable and deterministic.

A run directory holds the whole state of one run (:mod:`roaming.rundir`):

- ``config.json``: the resolved configuration (:class:`roaming.config.RunConfig`);
- ``checkpoint.pt``: the latest state (model, optimizer, masks and their history, counters, every
  random generator), rewritten atomically after each epoch; re-running the same command resumes
  from it, a different configuration (or training code) starts over;
- ``history.csv``: one row per (epoch, split) with every metric;
- ``masks.h5`` (task routing, roaming): every masked layer's mask after each update event;
- ``model.pt``: the configuration and the final weights and masks, written once training is
  complete;
- ``train.lock``: held while a process trains the run, so it has one writer at a time.

Every random choice flows from the run's seed through three independent generators (weights,
data order, masks), all saved in the checkpoint, and the CPU thread count is part of the
configuration, so on a CPU a resumed run is bitwise identical to an uninterrupted one.
A NaN or infinite loss stops the run at once; it is never marked complete. SIGTERM or SIGUSR1
(what SLURM sends at preemption, or before the time limit when asked) stop it at the next batch
boundary with a checkpoint of the epoch so far, from which the same command resumes, bitwise as
if it had never stopped.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from roaming import checkpoint, rundir
from roaming.atomic import atomic_path, write_json
from roaming.config import RunConfig, TrainConfig, resolve
from roaming.data.splits import Split, load_split, read_attributes
from roaming.datasets import get_dataset
from roaming.errors import ConfigError, DataError, NonFiniteError, StoppedError
from roaming.methods import Method, get_method
from roaming.methods.roaming import Roaming
from roaming.methods.weighting import make_weighting
from roaming.models import MultiTaskModel, build_model, masked_layers
from roaming.predict import predict
from roaming.tasks import TaskSet
from roaming.tracker import HostCopy, Tracker

# How often the progress bar's running losses are read from the device (each read waits for it).
_POSTFIX_SECONDS = 1.0

# Signals that ask for a checkpoint at the next batch boundary and a clean exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class _StopRequested(Exception):
    """Raised inside an epoch at the batch boundary after a stop signal."""


def pick_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def use_threads(cfg: RunConfig) -> None:
    """Run CPU kernels on the configured number of threads: float reductions split differently
    across threads, so this is part of what makes a CPU run bitwise reproducible."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for weights, data order and masks, all from the run's seed."""
    weights, data, masks = np.random.SeedSequence(seed).generate_state(3)
    return int(weights), int(data), int(masks)


class Trainer:
    """The model, optimizer, loss weighting and masks of one run, and how one batch and one
    epoch step them. Evaluation is :func:`roaming.predict.predict`; the run directory is
    :func:`train`'s."""

    def __init__(
        self, cfg: RunConfig, tasks: TaskSet, device: torch.device, *, training: bool = True
    ) -> None:
        self.cfg = cfg
        self.tasks = tasks
        self.device = device
        self.method: Method = get_method(cfg.method)
        weight_seed, data_seed, mask_seed = _seeds(cfg.seed)
        torch.manual_seed(weight_seed)
        self.model: MultiTaskModel = build_model(
            cfg.model,
            head_sizes=tasks.head_sizes,
            slot=self.method.slot,
            width=cfg.width,
            bn_running_stats=cfg.bn == "running",
            compute=cfg.compute or "dense",
            precision=cfg.precision or "fp32",
            channels_last={"on": True, "off": False}.get(cfg.channels_last or "auto"),
        ).to(device)
        self.weighting = make_weighting(
            self.method.weighting, len(tasks.names), self.model.last_shared_conv.weight, cfg.alpha
        )
        parameters = [*self.model.parameters(), *self.weighting.parameters()]
        # foreach: one multi-tensor update instead of a Python loop over tensors (the CUDA
        # default; on a CPU ~20% faster per-task steps, which update every task's SE modules).
        self.optimizer = torch.optim.Adam(parameters, lr=cfg.lr, foreach=True) if training else None
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
                strategy=cfg.strategy or "random",
                update_ratio=cfg.update_ratio or 1.0,
                generator=torch.Generator().manual_seed(mask_seed),
            )
            self.roaming.initialise(cfg.sharing)
        self.epoch = 0
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        # Where an interrupted epoch stands (batches done, the data generator at the epoch's
        # start, the tracker so far), between a stop and the resumed epoch.
        self.epoch_progress: dict[str, Any] | None = None
        self.stop_signal: int | None = None

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Adam steps one batch takes: one per task with ``per_task`` steps, else one."""
        return len(self.tasks.names) if self.cfg.task_steps == "per_task" else 1

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
        if not self.model.task_specific or self.cfg.task_steps == "fused":
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
        per_task = self.cfg.task_steps == "per_task"
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
        """One pass over ``split`` in a seeded random order, with the roaming events it holds.

        Each batch's losses are checked for NaN and infinity one batch later, from a copy made
        without waiting (:class:`~roaming.tracker.HostCopy`), so a GPU never drains its queue per
        batch; a bad one raises :class:`NonFiniteError` naming the epoch, iteration and task.
        After a stop signal the pass ends at the next batch boundary, leaving
        :attr:`epoch_progress` for the checkpoint; an epoch started with :attr:`epoch_progress`
        set continues that pass.
        """
        self.model.train()
        resumed, self.epoch_progress = self.epoch_progress, None
        if resumed is not None:
            self.data_generator.set_state(resumed["data_rng"])
        epoch_rng = self.data_generator.get_state()
        order = torch.randperm(len(split), generator=self.data_generator).to(self.device)
        batches = order.split(self.cfg.batch_size)
        period = None
        if self.roaming is not None and self.cfg.update_clock == "epoch_fraction":
            period = math.floor(self.cfg.update_interval * len(batches)) + 1
        tracker = Tracker(self.tasks, self.device)
        done = 0
        if resumed is not None:
            tracker.load_state_dict(resumed["tracker"])
            done = resumed["position"]
        bar = tqdm(
            batches[done:],
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            initial=done,
            total=len(batches),
            leave=False,
            disable=not progress,
        )
        pending: HostCopy | None = None
        shown = time.monotonic()
        for position, index in enumerate(bar, start=done + 1):
            batch = split.batch(index)
            losses = tracker.add(batch, self.step(batch))
            self.iteration += 1
            if pending is not None:
                self._check_finite(pending)
            pending = HostCopy(self.iteration, losses)
            if period is not None and self.iteration % period == 0:
                self.roaming.update(self.iteration)
            if progress and time.monotonic() - shown >= _POSTFIX_SECONDS:
                bar.set_postfix(tracker.running_losses(), refresh=False)
                shown = time.monotonic()
            if self.stop_signal is not None and position < len(batches):
                self._check_finite(pending)
                self.epoch_progress = {
                    "position": position,
                    "batches": len(batches),
                    "data_rng": epoch_rng,
                    "tracker": tracker.state_dict(),
                }
                raise _StopRequested
        if pending is not None:
            self._check_finite(pending)
        if self.roaming is not None and self.cfg.update_clock == "epochs":
            interval = int(self.cfg.update_interval)
            if self.epoch >= interval and self.epoch % interval == 0:
                self.roaming.update(self.iteration)
        row = tracker.compute()
        weights = self.weighting.epoch_weights()
        if weights is not None:  # GradNorm's weights at the epoch's end, MGDA-UB's mean α
            names = self.tasks.names
            row |= {f"weight/{n}": w for n, w in zip(names, weights.tolist(), strict=True)}
        return row

    def _check_finite(self, losses: HostCopy) -> None:
        for name, value in zip(self.tasks.names, losses.values(), strict=True):
            if not math.isfinite(value):
                raise NonFiniteError(
                    f"loss of task {name!r} is {value} at epoch {self.epoch + 1}, iteration "
                    f"{losses.iteration}: training stopped (try a lower --lr)"
                )

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The complete resumable state, loadable with ``weights_only=True``."""
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()},
            "weighting": self.weighting.state_dict(),
            "epoch_progress": self.epoch_progress,
        }
        if self.roaming is not None:
            state["roaming"] = self.roaming.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.data_generator.set_state(state["rng"]["data"])
        if self.roaming is not None:
            self.roaming.load_state_dict(state["roaming"])
        self.weighting.load_state_dict(state["weighting"])
        self.epoch = state["epoch"]
        self.iteration = state["iteration"]
        self.history = list(state["history"])
        self.epoch_progress = state.get("epoch_progress")


# -- the run directory --------------------------------------------------------------------------


def _write_outputs(run_dir: Path, trainer: Trainer, *, final: bool) -> None:
    """history.csv and masks.h5 from the trainer's state, then (last) the checkpoint; after the
    last epoch model.pt comes before the checkpoint, so a complete checkpoint without model.pt
    means model.pt was removed on purpose (``snakemake --forcerun``), not a crash."""
    with atomic_path(run_dir / rundir.HISTORY_FILE) as tmp:
        pd.DataFrame(trainer.history).to_csv(tmp, index=False)
    if trainer.roaming is not None:
        trainer.roaming.write(run_dir / rundir.MASKS_FILE)
    if final:
        model = {
            "config": trainer.cfg.to_dict(),
            "epoch": trainer.epoch,
            "iteration": trainer.iteration,
            "model": trainer.model.state_dict(),
        }
        checkpoint.save(run_dir / rundir.MODEL_FILE, model)
    checkpoint.save(run_dir / rundir.CHECKPOINT_FILE, trainer.state_dict())


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


def resolve_request(request: TrainConfig) -> tuple[RunConfig, dict[str, Any]]:
    """The run configuration of ``request`` on its prepared file, and the file's attributes.

    Refuses a file whose data source contradicts the request (``--data-source``)."""
    attrs = read_attributes(request.data)
    source = attrs.get("data_source")
    if request.data_source is not None and source != request.data_source:
        raise ConfigError(
            f"{request.data} holds {source or 'unlabelled'} data, but this run is configured "
            f"for {request.data_source} data (--data-source): prepare the data of this preset"
        )
    cfg = resolve(
        request, attrs["dataset"], fingerprint=attrs.get("fingerprint"), data_source=source
    )
    return cfg, attrs


def train(request: TrainConfig, *, progress: bool = True, restart: bool = False) -> Path:
    """Train (or resume, or confirm) the run in ``request.out``; returns the run directory."""
    cfg, attrs = resolve_request(request)
    run_dir = Path(request.out)
    with rundir.RunLock(run_dir):
        if not restart and _finished(run_dir, cfg):
            print(f"{run_dir}: already complete ({cfg.epochs} epochs); nothing to do")
            return run_dir
        state = None if restart else _resumable(run_dir, cfg)
        if state is None:
            rundir.clear_results(run_dir)
        write_json(run_dir / rundir.CONFIG_FILE, cfg.to_dict())
        use_threads(cfg)
        device = pick_device(cfg.device)
        spec = get_dataset(cfg.dataset)
        tasks = spec.tasks(attrs, cfg.task, cfg.task_set)
        trainer = Trainer(cfg, tasks, device)
        if state is not None:
            _check_consistent(run_dir / rundir.CHECKPOINT_FILE, state, trainer)
            trainer.load_state_dict(state)
            print(f"{run_dir}: resuming {_where(trainer)}")
        with _stop_on_signals(trainer, run_dir):
            _fit(run_dir, trainer, request.data, progress)
    return run_dir


def _where(trainer: Trainer) -> str:
    """Where a run stands: ``after epoch 3`` or ``in epoch 4 after batch 5 of 12``."""
    progress = trainer.epoch_progress
    if progress is None:
        return f"after epoch {trainer.epoch}"
    batches = f"batch {progress['position']} of {progress['batches']}"
    return f"in epoch {trainer.epoch + 1} after {batches}"


@contextmanager
def _stop_on_signals(trainer: Trainer, run_dir: Path) -> Iterator[None]:
    """While training, :data:`STOP_SIGNALS` ask for a stop at the next batch boundary."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a library caller gets none
        return

    def request_stop(signum: int, _: Any) -> None:
        trainer.stop_signal = signum
        name = signal.Signals(signum).name
        print(f"{run_dir}: {name} received; stopping at the next batch boundary", flush=True)

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fit(run_dir: Path, trainer: Trainer, data: Path, progress: bool) -> None:
    """Train the remaining epochs, checkpointing after each and evaluating as the run's
    ``eval_interval`` says."""
    cfg, protocol = trainer.cfg, get_dataset(trainer.cfg.dataset).protocol
    fields = trainer.tasks.fields
    train_split = load_split(data, protocol.train_split, fields).to(trainer.device)
    eval_split = load_split(data, protocol.eval_split, fields).to(trainer.device)
    if len(train_split) == 0:
        raise DataError(data, f"the {protocol.train_split!r} split is empty")
    while trainer.epoch < cfg.epochs:
        if trainer.stop_signal is not None:  # between epochs: the checkpoint is written
            _stopped(run_dir, trainer)
        start, written = time.perf_counter(), trainer.epoch  # the checkpoint on disk
        try:
            train_row = trainer.train_epoch(train_split, progress)
            seconds = time.perf_counter() - start
            trainer.epoch += 1
            rows = {"train": train_row | {"seconds": seconds}}
            if len(eval_split) and cfg.evaluates_after(trainer.epoch):
                metrics, _ = predict(trainer.model, trainer.tasks, eval_split, cfg.batch_size)
                rows[protocol.eval_split] = metrics | {"seconds": 0.0}
        except _StopRequested:
            checkpoint.save(run_dir / rundir.CHECKPOINT_FILE, trainer.state_dict())
            _stopped(run_dir, trainer)
        except NonFiniteError as error:
            kept = f"the checkpoint of epoch {written} is kept" if written else ""
            raise NonFiniteError(f"{run_dir}: {error}{'; ' + kept if kept else ''}") from None
        for split, row in rows.items():
            extra = {"update_progress": trainer.roaming.progress()} if trainer.roaming else {}
            trainer.history.append(
                {"epoch": trainer.epoch, "split": split, "iteration": trainer.iteration}
                | extra
                | row
            )
        _write_outputs(run_dir, trainer, final=trainer.epoch == cfg.epochs)
        print(_summary(trainer.epoch, cfg.epochs, rows, trainer), flush=True)


def _stopped(run_dir: Path, trainer: Trainer) -> None:
    name = signal.Signals(trainer.stop_signal).name
    raise StoppedError(
        f"{run_dir}: stopped by {name} {_where(trainer)}; checkpoint written, run the same "
        "command to resume",
        status=128 + trainer.stop_signal,
    )


def _finished(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a complete model of exactly this configuration and code."""
    if not (run_dir / rundir.MODEL_FILE).exists():
        return False
    try:
        finished = rundir.finished_config(run_dir)
    except DataError as error:
        print(f"{error}; training it again")
        return False
    return finished.identity() == cfg.identity()


def _resumable(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None to start over (with a line saying why)."""
    path = run_dir / rundir.CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = checkpoint.load(path)
        recorded = RunConfig.from_dict(state["config"])
    except (DataError, ValueError) as error:
        raise DataError(path, f"{_cause(error)}; start this run over with --restart") from None
    if recorded.identity() != cfg.identity():
        changed = "; ".join(cfg.differences(recorded))
        print(f"{run_dir}: configuration changed since the checkpoint ({changed}); starting over")
        return None
    if state["epoch"] >= cfg.epochs:
        print(
            f"{run_dir}: training was complete but {rundir.MODEL_FILE} is gone (removed to "
            "retrain, e.g. by snakemake --forcerun); training again from scratch"
        )
        return None
    return state


def _cause(error: Exception) -> str:
    """A DataError's message without its path (the caller names the file)."""
    text = str(error)
    return text.split(": ", 1)[1] if isinstance(error, DataError) and ": " in text else text


def _check_consistent(path: Path, state: dict[str, Any], trainer: Trainer) -> None:
    """A checkpoint's epoch, iteration, history and optimizer steps must tell one story; an
    edited or mixed-up checkpoint would otherwise resume into a wrongly trained model."""
    epoch, iteration = state["epoch"], state["iteration"]
    epochs = [row["epoch"] for row in state["history"] if row["split"] == "train"]
    steps = {
        int(value["step"]) for value in state["optimizer"]["state"].values() if "step" in value
    }
    expected_steps = {iteration * trainer.optimizer_steps_per_batch} if iteration else set()
    progress = state.get("epoch_progress")
    in_epoch = progress["position"] if progress else 0
    ended = state["history"][-1]["iteration"] if state["history"] else 0
    problems = []
    if epochs != list(range(1, epoch + 1)):
        problems.append(f"epoch {epoch} but the history holds epochs {epochs}")
    elif ended + in_epoch != iteration:
        problems.append(f"iteration {iteration} but the history ends at {ended} + {in_epoch}")
    if steps and steps != expected_steps:
        problems.append(f"{iteration} iterations but optimizer steps {sorted(steps)}")
    if problems:
        raise DataError(
            path, f"inconsistent ({'; '.join(problems)}); start this run over with --restart"
        )


def load_trained(run_dir: str | Path, data: str | Path, device: torch.device) -> Trainer:
    """The finished model of ``run_dir`` (its ``model.pt``), set up to predict on ``data``.

    The run must be finished and nobody may be training it; its ``config.json`` must agree
    with ``model.pt``, and ``data`` must be the data it was trained on."""
    run_dir = Path(run_dir)
    rundir.require_not_training(run_dir)
    cfg, state = rundir.finished_run(run_dir)
    attrs = read_attributes(data)
    if attrs["dataset"] != cfg.dataset:
        raise ConfigError(
            f"{data} holds {attrs['dataset']!r} but run {run_dir} was trained on {cfg.dataset!r}"
        )
    if cfg.data_fingerprint is not None and attrs.get("fingerprint") != cfg.data_fingerprint:
        raise DataError(
            data,
            f"not the data run {run_dir} was trained on (fingerprint {attrs.get('fingerprint')}"
            f", the run's {cfg.data_fingerprint}): retrain it or give the right file",
        )
    use_threads(cfg)
    tasks = get_dataset(cfg.dataset).tasks(attrs, cfg.task, cfg.task_set)
    trainer = Trainer(replace(cfg, device=str(device)), tasks, device, training=False)
    trainer.model.load_state_dict(state["model"])
    return trainer


__all__ = ["TrainConfig", "Trainer", "load_trained", "pick_device", "resolve_request", "train"]
