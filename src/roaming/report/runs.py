"""Run directories as a table, and where their numbers come from.

A run directory holds the configuration written by training, ``history.csv``, ``masks.h5`` (TR,
MR) and the metrics JSON of each evaluated split (:func:`roaming.grid.metrics_path`). This module
reads them; :func:`read_config` is the only reader of a run's configuration.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from roaming import grid, rundir
from roaming.errors import ConfigError, DataError
from roaming.report import catalog

# Configuration keys that do not make two runs different configurations (the update clock
# follows from the dataset; where the data came from is provenance, not an option).
NOT_OPTIONS = (
    "seed",
    "data",
    "data_fingerprint",
    "data_source",
    "device",
    "version",
    "update_clock",
)
# Options a table or figure always distinguishes; the others only where they vary.
SHOWN = ("dataset", "method", "task", "sharing", "update_interval", "strategy", "update_ratio")
DATA_SOURCES = ("synthetic", "real")
UNKNOWN = "unknown"
SYNTHETIC_NOTE = "synthetic demo data: plumbing check, not evidence about the method"
HISTORY_FILE = "history.csv"
_HISTORY_COLUMNS = ("epoch", "split", "iteration", "loss")
MASKS_FILE = "masks.h5"


@dataclass
class Runs:
    """Runs as a table: one row per run with ``run`` (its directory), options, seed, metrics.

    ``metrics`` are the headline keys (no ``/``); the frame also holds every per-attribute or
    per-class key, CelebA's group F-scores and each run's ``data_source``.
    """

    frame: pd.DataFrame
    options: list[str]
    metrics: list[str]

    @property
    def dataset(self) -> str:
        """The one dataset of these runs."""
        return str(self.frame["dataset"].iloc[0])

    @property
    def task_set(self) -> str:
        """The one task set of these runs."""
        return task_set_of(self.frame.iloc[0])

    @property
    def layout(self) -> catalog.Layout:
        """What the report of these runs shows."""
        return catalog.layout(self.dataset, self.task_set)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "missing (train and evaluate the run first)") from None
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON: {error.msg}", line=error.lineno) from None


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The configuration of a finished run, as its ``model.pt`` records it and checked against
    its ``config.json`` (a hand-edited record is an error naming both); a run that is being
    trained is refused."""
    rundir.require_not_training(run_dir)
    return rundir.finished_config(run_dir).to_dict()


def collect(
    run_dirs: Sequence[str | Path], split: str = "test", data_source: str | None = None
) -> Runs:
    """Read each run's configuration and its metrics on ``split``; STL tasks by name.

    ``data_source`` is what a configuration without its own ``data_source`` is taken to be
    (``synthetic`` or ``real``; None: unknown). All runs must be of one dataset and task set.
    """
    if not run_dirs:
        raise ConfigError("no run directories given")
    rows, options, metrics = [], {}, {}
    for run_dir in run_dirs:
        config = read_config(run_dir)
        values = _read_json(grid.metrics_path(run_dir, split))
        if config.get("task") is not None:
            config["task"] = grid.task_names(config["dataset"], task_set_of(config))[config["task"]]
        config["data_source"] = config.get("data_source") or data_source or UNKNOWN
        if config["dataset"] == "celeba":
            values |= catalog.group_fscores(values)
        # An option named like a metric (CelebA's `precision` metric, the `precision` option)
        # is a column of its own: `run_precision`.
        config = {(f"run_{k}" if k in values else k): v for k, v in config.items()}
        options.update(dict.fromkeys(k for k in config if k not in NOT_OPTIONS))
        metrics.update(dict.fromkeys(k for k in values if "/" not in k))
        rows.append({"run": str(run_dir), **config, **values})
    frame = pd.DataFrame(rows)
    kinds = sorted({(r["dataset"], task_set_of(r)) for r in rows})
    if len(kinds) > 1:
        listed = ", ".join(f"{dataset} ({task_set})" for dataset, task_set in kinds)
        raise ConfigError(f"runs of several datasets or task sets ({listed}): report each alone")
    ordered = [o for o in SHOWN if o in options] + [o for o in options if o not in SHOWN]
    return Runs(frame, ordered, list(metrics))


def task_set_of(row: Any) -> str:
    """The task set of a run (config or table row); runs from before task sets: paper."""
    value = row.get("task_set")
    return grid.DEFAULT_TASK_SET if missing(value) else str(value)


def missing(value: Any) -> bool:
    """Whether a table cell holds no value (None or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``history.csv``: one row per (epoch, split)."""
    path = Path(run_dir) / HISTORY_FILE
    try:
        history = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(path, "missing (the run has not trained an epoch)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(path, f"not a valid history: {error}") from None
    absent = [column for column in _HISTORY_COLUMNS if column not in history]
    if absent:
        raise DataError(path, f"no column {', '.join(absent)} (not a roaming history)")
    return history


@dataclass(frozen=True)
class Provenance:
    """Where a report's numbers come from: shown on every table, figure and page."""

    dataset: str
    preset: str | None
    data_source: str
    fingerprints: tuple[str, ...]
    seeds: tuple[int, ...]
    split: str
    commit: str | None
    date: str

    @property
    def synthetic(self) -> bool:
        """Whether any run trained on synthetic data (then every output says so)."""
        return "synthetic" in self.data_source

    def line(self) -> str:
        """One line: preset, data, seeds, split, commit, date."""
        prints = ", ".join(f[:12] for f in self.fingerprints) or "unknown"
        seeds = ", ".join(map(str, self.seeds))
        parts = [
            f"preset {self.preset or 'unknown'}",
            f"{self.data_source} data (fingerprint {prints})",
            f"seeds {seeds}",
            f"{self.split} split",
            f"commit {self.commit[:12] if self.commit else 'unknown (not a git checkout)'}",
            self.date,
        ]
        return " · ".join(parts)


def provenance(runs: Runs, split: str, preset: str | None) -> Provenance:
    """The provenance of a report on ``runs``, dated now, at the current git commit."""
    frame = runs.frame
    sources = sorted(set(frame["data_source"]))
    prints = sorted({str(f) for f in frame["data_fingerprint"] if not missing(f)})
    return Provenance(
        dataset=runs.dataset,
        preset=preset,
        data_source=sources[0] if len(sources) == 1 else "mixed " + "/".join(sources),
        fingerprints=tuple(prints),
        seeds=tuple(sorted({int(seed) for seed in frame["seed"]})),
        split=split,
        commit=git_commit(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the working directory; None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
