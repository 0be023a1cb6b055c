"""``params.yaml`` → the runs of the experiment grid and every path the pipeline writes.

This is the one place that expands the configuration: the Snakefile, the report and the tests all
read runs and paths from here, so a run's id, directory and command line cannot drift apart.
The expansion is a pure function of the validated config; runs come out in config order, and a
run produced by two sweeps appears once.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from roaming import config as run_config
from roaming.errors import ConfigError
from roaming.methods import get_method
from roaming.protocol import DEFAULT_TASK_SET, is_dense, task_names
from roaming.rundir import CONFIG_FILE as CONFIG_FILE  # re-exported: the run record
from roaming.rundir import MODEL_FILE, metrics_path

# The workflow's schema: the Snakefile validates params.yaml through `plan` (found in the
# source checkout).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"
PARAMS_PATH = Path("params.yaml")
# Everything the pipeline writes lives under a per-preset root (``runs/<preset>/…``), so the demo's
# synthetic runs and the paper's real ones can never overwrite or be mistaken for each other.
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
PROCESSED_DIR = Path("data") / "processed"
FIXTURES_DIR = Path("data") / "fixtures"
LOGS_DIR = Path("logs")
# What `roaming report` writes into a dataset's report folder, by role, in the order of the page.
REPORT_FILES = {
    "figure1_sharing": "figure1_sharing.png",  # headline metric vs sharing ratio p, MR vs TR
    "figure1_interval": "figure1_interval.png",  # vs update interval Δ (MR at fixed p)
    "figure1_progress": "figure1_progress.png",  # vs update progress r(c)
    "figure1_strategy": "figure1_strategy.png",  # random vs least_align against r
    "table": "table.md",  # the paper-style tables, Δm, provenance and footnotes
    "table_csv": "table.csv",  # the same, one column per value
    "curves": "curves.png",  # evaluation metric and training loss per epoch, per method
    "masks": "masks.png",  # one MR run's masks: (task, channel) pairs visited, task overlap
    "claims": "claims.md",  # each claim of the paper: holds, does not hold, not measured
    "page": "report.html",  # all of the above as one self-contained page
    "summary": "summary.json",  # a few headline numbers (what `dvc metrics show` lists)
    "curves_data": "curves",  # a folder: one CSV per method of curves.png (`dvc plots`)
    "metrics": "metrics",  # a folder: one JSON of headline metrics per run
}
# The one page of a preset: every dataset's report (reports/<preset>/index.html).
INDEX_FILE = "index.html"
# Every dataset's summary.json in one file next to the index: the preset's DVC metrics.
SUMMARY_FILE = "summary.json"
# Files a report writes only when the grid has their runs, and what would produce them.
PANEL_NEEDS = {
    "figure1_sharing": "TR or MR runs (the sweeps grid.tr.<name>, grid.mr.<name>)",
    "figure1_interval": "an MR interval sweep: two or more update intervals at one sharing "
    "ratio, strategy and update ratio (e.g. grid.mr.interval_sweep: "
    "{update_interval: [0.05, 0.1, 0.5]})",
    "figure1_progress": "an MR progress sweep: two or more update ratios with the random "
    "strategy at one sharing ratio and interval (e.g. grid.mr.progress_sweep: "
    "{update_ratio: [0.5, 1.0]})",
    "figure1_strategy": "MR runs with both strategies, random and least_align, at one sharing "
    "ratio and interval (e.g. grid.mr.progress_sweep: {strategy: [random, least_align]})",
    "masks": "an MR run (grid.mr)",
}
# Each sweep panel: the option it varies and the options its series hold fixed.
_PANEL_SERIES = {
    "figure1_interval": ("update_interval", ("sharing", "strategy", "update_ratio"), None),
    "figure1_progress": ("update_ratio", ("sharing", "update_interval"), "random"),
    "figure1_strategy": ("strategy", ("sharing", "update_interval"), None),
}

# The order of a run's options in its name and on its command line.
_MR_KEYS = ("sharing", "update_interval", "strategy", "update_ratio")
_TR_KEYS = ("sharing",)
# Protocol options that `roaming train` accepts only for some methods: option → the
# `roaming.methods.Method` flag that says a method takes it.
_METHOD_ONLY = {"task_steps": "task_specific", "compute": "masked"}
# Baselines with one run per seed and no options, switched on by `grid.<method>: true`.
_BASELINES = ("mtl", "gradnorm", "mgda", "se")
# What `resources` means when params.yaml leaves a key out.
RESOURCE_DEFAULTS = {"runs_per_gpu": 1, "evaluate_runtime": 60}


def fmt(value: Any) -> str:
    """A number as it appears in run names and command lines: lossless, no trailing ``.0``."""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def processed_path(preset: str, dataset: str) -> Path:
    """The prepared HDF5 file of ``dataset`` in ``preset``."""
    return PROCESSED_DIR / preset / f"{dataset}.h5"


def report_files(
    report_dir: str | Path, runs: Iterable[Mapping[str, Any]] | None = None
) -> dict[str, Path]:
    """The files ``roaming report`` writes into ``report_dir``, by role.

    With ``runs`` (each a mapping with ``method`` and the TR / MR options), only those it writes
    for them: a panel of :data:`PANEL_NEEDS` whose runs are missing is not drawn.
    """
    roles = REPORT_FILES if runs is None else report_roles(runs)
    return {role: Path(report_dir) / REPORT_FILES[role] for role in roles}


def report_roles(runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The roles of :data:`REPORT_FILES` that a report of ``runs`` writes."""
    runs = list(runs)
    methods = {run["method"] for run in runs}
    drawn = {
        "figure1_sharing": bool(methods & {"tr", "mr"}),
        "masks": "mr" in methods,
        **{panel: bool(panel_series(runs, panel)) for panel in _PANEL_SERIES},
    }
    return [role for role in REPORT_FILES if drawn.get(role, True)]


def panel_series(
    runs: Iterable[Mapping[str, Any]], panel: str
) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """The series of a sweep panel: MR runs grouped by the options the panel holds fixed.

    Only groups in which the varied option takes two or more values are series; the panel is
    drawn when there is one. The figures and :func:`report_roles` both use this, so a declared
    figure is always drawable.
    """
    vary, fixed, strategy = _PANEL_SERIES[panel]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for run in runs:
        if run["method"] == "mr" and strategy in (None, run["strategy"]):
            groups.setdefault(tuple(run[key] for key in fixed), []).append(run)
    return {
        key: rows
        for key, rows in groups.items()
        if len({row[vary] for row in rows if not _is_missing(row[vary])}) >= 2
    }


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Run:
    """One training run: what ``roaming train`` is called with and where its outputs go."""

    preset: str
    dataset: str
    method: str
    seed: int
    protocol: Mapping[str, Any] = field(compare=False, repr=False)
    threads: int = 1
    source: str = "synthetic"
    splits: tuple[str, ...] = ("test",)
    task: int | None = None
    task_name: str | None = None
    sharing: float | None = None
    update_interval: float | None = None
    strategy: str | None = None
    update_ratio: float | None = None

    @property
    def name(self) -> str:
        """The last part of the id: the method's options and the seed."""
        parts: list[str] = []
        if self.method == "stl":
            parts.append(str(self.task_name))
        if self.sharing is not None:
            parts.append(f"p{fmt(self.sharing)}")
        if self.update_interval is not None:
            parts += [f"d{fmt(self.update_interval)}", str(self.strategy)]
            parts.append(f"r{fmt(self.update_ratio)}")
        parts.append(f"s{self.seed}")
        return "_".join(parts)

    @property
    def id(self) -> str:
        """``<dataset>/<method>/<name>``, unique within a preset."""
        return f"{self.dataset}/{self.method}/{self.name}"

    @property
    def dir(self) -> Path:
        """The run directory that ``roaming train --out`` fills: ``runs/<preset>/<id>``."""
        return RUNS_DIR / self.preset / self.id

    @property
    def model(self) -> Path:
        """The file training writes last: the run's "done" marker."""
        return self.dir / MODEL_FILE

    @property
    def metrics(self) -> dict[str, Path]:
        """Split → metrics JSON of the final model."""
        return {split: metrics_path(self.dir, split) for split in self.splits}

    @property
    def data(self) -> Path:
        """The prepared file this run reads."""
        return processed_path(self.preset, self.dataset)

    def options(self) -> dict[str, Any]:
        """The ``roaming train`` options of this run but ``--data`` and ``--out``, in
        command-line order (the fields of :class:`roaming.config.TrainConfig`)."""
        options: dict[str, Any] = {"method": self.method}
        if self.task is not None:
            options["task"] = self.task
        options |= {key: getattr(self, key) for key in _MR_KEYS if getattr(self, key) is not None}
        method = get_method(self.method)
        options |= {
            key: value
            for key, value in self.protocol.items()
            if key not in _METHOD_ONLY or getattr(method, _METHOD_ONLY[key])
        }
        return options | {"seed": self.seed, "threads": self.threads, "data_source": self.source}

    def request(self) -> run_config.TrainConfig:
        """What the pipeline asks ``roaming train`` for: :meth:`options` as a request."""
        return run_config.TrainConfig(data=self.data, out=self.dir, **self.options())

    def train_args(self) -> list[str]:
        """The options of ``roaming train`` for this run, except ``--data`` and ``--out``."""
        return [
            arg
            for key, value in self.options().items()
            for arg in (f"--{key.replace('_', '-')}", fmt(value))
        ]

    def shell_args(self) -> str:
        """:meth:`train_args` quoted for a shell command line."""
        return shlex.join(self.train_args())


@dataclass(frozen=True)
class Dataset:
    """One dataset of the active preset: its data preparation, resources and runs."""

    preset: str
    name: str
    config: Mapping[str, Any] = field(repr=False)
    runs: tuple[Run, ...]

    @property
    def fixtures(self) -> Mapping[str, Any] | None:
        """Options of ``roaming fixtures`` when the raw data is synthetic, else None."""
        return self.config["data"].get("fixtures")

    def fixtures_args(self) -> str:
        """:attr:`fixtures` as ``roaming fixtures`` options, quoted for a shell command line."""
        options = self.fixtures or {}
        return shlex.join(
            arg
            for key, value in options.items()
            for arg in (f"--{key.replace('_', '-')}", fmt(value))
        )

    @property
    def raw(self) -> Path:
        """The raw release: generated fixtures or the configured folder."""
        if self.fixtures is not None:
            return FIXTURES_DIR / self.preset / self.name
        return Path(self.config["data"]["raw"])

    @property
    def synthetic(self) -> bool:
        """Whether the preset trains on generated fixtures rather than a real release."""
        return self.fixtures is not None

    @property
    def processed(self) -> Path:
        """The prepared HDF5 file that every run reads: ``data/processed/<preset>/<name>.h5``."""
        return processed_path(self.preset, self.name)

    @property
    def dense(self) -> bool:
        """Whether this is a scene-understanding dataset (CityScapes, NYUv2)."""
        return is_dense(self.name)

    @property
    def size(self) -> int | list[int] | None:
        """``roaming prepare --size``: CelebA's shorter side, a dense ``[H, W]``, or None (the
        reader's default: MTAN's files keep their size, raw releases become 128×256 / 288×384)."""
        return self.config["data"].get("size")

    def prepare_args(self) -> str:
        """The ``--size`` and ``--depth`` options of ``roaming prepare``, quoted; empty for the
        defaults."""
        args = []
        size = self.size
        if size is not None:
            args += [
                "--size",
                *(fmt(value) for value in (size if isinstance(size, list) else [size])),
            ]
        if "depth" in self.config["data"]:
            args += ["--depth", self.config["data"]["depth"]]
        return shlex.join(args)

    @property
    def task_set(self) -> str:
        """The task set every run of the dataset trains (``roaming train --task-set``)."""
        return self.config["train"].get("task_set", DEFAULT_TASK_SET)

    @property
    def resources(self) -> Mapping[str, int]:
        """Threads, GPUs, memory (MB), runtimes (minutes) and GPU sharing of one run."""
        return {**RESOURCE_DEFAULTS, **self.config["resources"]}

    def gpu_shares(self, per_gpu: int) -> int:
        """The shares of a GPU one training run takes when a GPU counts ``per_gpu`` shares.

        Snakemake resources are integers, so runs that share a device cannot each take a
        fraction of ``gpu``: they take ``per_gpu / runs_per_gpu`` of its shares instead.
        """
        resources = self.resources
        return resources["gpu"] * per_gpu // resources["runs_per_gpu"]

    @property
    def evaluate_resources(self) -> dict[str, int]:
        """Threads, memory (MB) and runtime (minutes) of evaluating one split.

        A cluster runs a run's evaluations side by side in its training job, which adds their
        threads and memory up, so each split gets its share of what training asked for.
        """
        resources = self.resources
        splits = len(self.config["evaluate"]["splits"])
        return {
            "threads": max(1, resources["threads"] // splits),
            "mem_mb": max(1, resources["mem_mb"] // splits),
            "runtime": resources["evaluate_runtime"],
        }

    @property
    def metric(self) -> str:
        """The headline metric of the report's figures and claims."""
        return self.config["report"]["metric"]

    @property
    def report_dir(self) -> Path:
        """Where ``roaming report`` writes this dataset's tables and figures."""
        return REPORTS_DIR / self.preset / self.name

    @property
    def report_files(self) -> dict[str, Path]:
        """The files ``roaming report`` writes for this dataset's runs, by role."""
        options = ("method", *_MR_KEYS)
        return report_files(
            self.report_dir, [{key: getattr(run, key) for key in options} for run in self.runs]
        )

    def report_args(self) -> str:
        """The options of ``roaming report`` besides the run directories and ``--out``, quoted:
        headline metric, preset, where the data comes from (for runs whose configuration does
        not say) and the TR / MR defaults, the configurations the claims call TR and MR."""
        return shlex.join(
            [
                "--metric",
                self.metric,
                "--preset",
                self.preset,
                "--data-source",
                "synthetic" if self.synthetic else "real",
                "--defaults",
                json.dumps(self.config["defaults"], separators=(",", ":")),
            ]
        )


@dataclass(frozen=True)
class Plan:
    """The active preset, expanded."""

    preset: str
    datasets: dict[str, Dataset]

    @property
    def runs_dir(self) -> Path:
        """``runs/<preset>``: the run directories of this preset."""
        return RUNS_DIR / self.preset

    @property
    def processed_dir(self) -> Path:
        """``data/processed/<preset>``: the prepared data of this preset."""
        return PROCESSED_DIR / self.preset

    @property
    def fixtures_dir(self) -> Path:
        """``data/fixtures/<preset>``: the synthetic raw releases of this preset (temporary)."""
        return FIXTURES_DIR / self.preset

    @property
    def reports_dir(self) -> Path:
        """``reports/<preset>``: the reports of this preset."""
        return REPORTS_DIR / self.preset

    @property
    def logs_dir(self) -> Path:
        """``logs/<preset>``: the job logs and benchmarks of this preset."""
        return LOGS_DIR / self.preset

    @property
    def gpu_shares(self) -> int:
        """How many shares one GPU counts: the least common multiple of the datasets'
        ``runs_per_gpu`` (1 when no run asks for a GPU), so every run takes a whole number."""
        shared = [data.resources for data in self.datasets.values() if data.resources["gpu"]]
        return math.lcm(*(resources["runs_per_gpu"] for resources in shared))

    @property
    def runs(self) -> list[Run]:
        """Every run of every dataset, in config order."""
        return [run for dataset in self.datasets.values() for run in dataset.runs]

    @functools.cached_property
    def _by_id(self) -> dict[str, Run]:
        return {run.id: run for run in self.runs}

    def run(self, run_id: str) -> Run:
        """The run called ``run_id``; a :class:`ConfigError` if the grid has none."""
        try:
            return self._by_id[run_id]
        except KeyError:
            raise ConfigError(f"no run {run_id!r} in preset {self.preset!r}") from None


@functools.cache
def _schema() -> dict[str, Any]:
    with SCHEMA_PATH.open() as file:
        return yaml.safe_load(file)


def validate(config: Mapping[str, Any]) -> None:
    """Check ``config`` against the workflow schema; the error names the offending key."""
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"params.yaml: {where}: {error.message}")
    if config["preset"] not in config["presets"]:
        known = ", ".join(config["presets"])
        raise ConfigError(f"params.yaml: preset: {config['preset']!r} is not one of: {known}")


def load(path: str | Path = PARAMS_PATH) -> dict[str, Any]:
    """Read and validate a params file."""
    with Path(path).open() as file:
        config = yaml.safe_load(file)
    validate(config)
    return config


def plan(config: Mapping[str, Any]) -> Plan:
    """Validate ``config`` and expand its active preset into datasets and runs."""
    validate(config)
    preset = config["preset"]
    datasets = {
        name: Dataset(preset, name, spec, tuple(_unique(_runs(preset, name, spec))))
        for name, spec in config["presets"][preset]["datasets"].items()
    }
    for dataset in datasets.values():
        for run in dataset.runs:
            _check_run(run)
    return Plan(preset, datasets)


def _check_run(run: Run) -> None:
    """Make every check ``roaming train`` makes on the options, so a dry run catches it."""
    try:
        run_config.resolve(run.request(), run.dataset)
    except ConfigError as error:
        where = f"presets.{run.preset}.datasets.{run.dataset}"
        raise ConfigError(f"params.yaml: {where}: run {run.name}: {error}") from None


def _stl_tasks(dataset: str, spec: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(index, name) of each STL run: all tasks, none, or the listed ones, in head order."""
    selected = spec["grid"]["stl"]
    names = task_names(dataset, spec["train"].get("task_set", DEFAULT_TASK_SET))
    if selected is True or selected is False:
        return list(enumerate(names)) if selected else []
    unknown = [name for name in selected if name not in names]
    if unknown:
        raise ConfigError(
            f"params.yaml: {dataset}.grid.stl: unknown task(s) {', '.join(unknown)}; "
            f"the task set has: {', '.join(names)}"
        )
    return [(task, name) for task, name in enumerate(names) if name in selected]


def _runs(preset: str, dataset: str, spec: Mapping[str, Any]) -> Iterator[Run]:
    sweeps = spec["grid"]
    common = {
        "preset": preset,
        "dataset": dataset,
        "protocol": dict(spec["train"]),
        "threads": spec["resources"]["threads"],
        "source": "synthetic" if "fixtures" in spec["data"] else "real",
        "splits": tuple(spec["evaluate"]["splits"]),
    }
    stl = _stl_tasks(dataset, spec)
    for seed in sweeps["seeds"]:
        for task, task_name in stl:
            yield Run(method="stl", seed=seed, task=task, task_name=task_name, **common)
        for method in _BASELINES:
            if sweeps.get(method, False):
                yield Run(method=method, seed=seed, **common)
        for method, keys in (("tr", _TR_KEYS), ("mr", _MR_KEYS)):
            for sweep in sweeps[method].values():
                for options in _product(spec["defaults"][method], sweep, keys):
                    yield Run(method=method, seed=seed, **options, **common)


def _product(
    defaults: Mapping[str, Any], sweep: Mapping[str, list[Any]], keys: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Every combination of a sweep's lists; keys the sweep leaves out take their default."""
    axes = [sweep.get(key, [defaults[key]]) for key in keys]
    for values in itertools.product(*axes):
        yield {
            key: float(value) if key != "strategy" else value
            for key, value in zip(keys, values, strict=True)
        }


def _unique(runs: Iterator[Run]) -> Iterator[Run]:
    seen: set[str] = set()
    for run in runs:
        if run.id not in seen:
            seen.add(run.id)
            yield run
