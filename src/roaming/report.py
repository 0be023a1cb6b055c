"""Tables and figures from run directories: what the paper's claims are checked against.

A run directory holds the resolved ``config.json`` written by training and the metrics JSON of
each evaluated split (:func:`roaming.grid.metrics_path`). Runs that differ only in their seed form
one configuration; the tables give the mean and standard deviation of every headline metric (a
metrics key without ``/``) over those seeds. The single-task baseline is, per seed, the STL runs of
every task group taken together, summarised as if they were one multi-task run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from roaming import grid
from roaming.atomic import atomic_path, write_json, write_text
from roaming.errors import DataError

# config.json keys that do not make two runs different configurations (the update clock follows
# from the dataset).
_NOT_OPTIONS = ("seed", "data", "data_fingerprint", "device", "version", "update_clock")
# Headline metrics that a multi-task run sums over its tasks rather than averages.
_SUMMED_OVER_TASKS = ("loss",)
# The task column of the combined single-task baseline.
STL_COMBINED = "all"
# Options always shown in the Markdown table; the others only where they vary.
_SHOWN = ("dataset", "method", "task", "sharing", "update_interval", "strategy", "update_ratio")
_METHOD_RANK = {"stl": 0, "mtl": 1, "gradnorm": 2, "mgda": 3, "se": 4, "tr": 5, "mr": 6}
# The figure's horizontal lines: method (or the combined STL baseline), label, colour, style.
_BASELINES = (
    ("mtl", "MTL", "gray", "--"),
    ("gradnorm", "GradNorm", "tab:brown", "-."),
    ("mgda", "MGDA-UB", "tab:olive", "-."),
    ("se", "SE-MTL", "tab:purple", "--"),
    (STL_COMBINED, "STL", "gray", ":"),
)


@dataclass
class Runs:
    """Runs as a table: one row per run with ``run`` (its directory), options, seed, metrics."""

    frame: pd.DataFrame
    options: list[str]
    metrics: list[str]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "missing (train and evaluate the run first)") from None
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON: {error.msg}", line=error.lineno) from None


def collect(run_dirs: Sequence[str | Path], split: str = "test") -> Runs:
    """Read each run's configuration and its metrics on ``split``; STL tasks by group name."""
    rows, options, metrics = [], {}, {}
    for run_dir in run_dirs:
        config = _read_json(Path(run_dir) / grid.CONFIG_FILE)
        values = _read_json(grid.metrics_path(run_dir, split))
        if config.get("task") is not None:
            names = grid.task_names(config["dataset"], _task_set(config))
            config["task"] = names[config["task"]]
        options.update(dict.fromkeys(k for k in config if k not in _NOT_OPTIONS))
        metrics.update(dict.fromkeys(k for k in values if "/" not in k))
        rows.append({"run": str(run_dir), **config, **values})
    ordered = [o for o in _SHOWN if o in options] + [o for o in options if o not in _SHOWN]
    return Runs(pd.DataFrame(rows), ordered, list(metrics))


def _task_set(row: Any) -> str:
    """The task set of a run (config or table row); runs from before task sets: paper."""
    value = row.get("task_set")
    return grid.DEFAULT_TASK_SET if _missing(value) else str(value)


def stl_baseline(runs: Runs) -> pd.DataFrame:
    """Per seed, the STL runs of all task groups merged into one multi-task run's metrics.

    The loss is the sum over tasks, as a multi-task run's loss (SPEC §2: the sum of task
    losses); every other metric with per-attribute values (``fscore/<attr>`` …) becomes the
    macro mean over all attributes, and one without them the mean over the groups. Seeds missing
    a group are left out rather than summarised over fewer tasks.
    """
    frame = runs.frame[runs.frame["method"] == "stl"]
    if frame.empty:
        return frame
    by = [o for o in runs.options if o != "task"] + ["seed"]
    rows = []
    for _, group in frame.groupby(by, dropna=False, sort=False):
        dataset = group["dataset"].iloc[0]
        if set(group["task"]) != set(grid.task_names(dataset, _task_set(group.iloc[0]))):
            continue
        row = {**group.iloc[0][by].to_dict(), "task": STL_COMBINED}
        for metric in runs.metrics:
            columns = [c for c in group.columns if c.startswith(f"{metric}/")]
            if metric in _SUMMED_OVER_TASKS:
                row[metric] = float(group[metric].sum())
            elif columns:
                row[metric] = float(pd.Series(group[columns].to_numpy().ravel()).mean())
            else:
                row[metric] = float(group[metric].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: Runs) -> pd.DataFrame:
    """One row per configuration: ``n_seeds`` and mean and std over seeds of each metric.

    Rows come in method order (STL per group, then the combined STL baseline, MTL, GradNorm,
    MGDA-UB, SE-MTL, TR, MR) and
    then by option values; std is the sample standard deviation (empty for a single seed).
    """
    frame = pd.concat([runs.frame, stl_baseline(runs)], ignore_index=True)
    table = (
        frame.groupby(runs.options, dropna=False, sort=False)
        .agg(
            n_seeds=("seed", "count"),
            **{f"{m}_{s}": (m, s) for m in runs.metrics for s in ("mean", "std")},
        )
        .reset_index()
    )
    return _sort(table).reset_index(drop=True)


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    def rank(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(_METHOD_RANK).fillna(len(_METHOD_RANK))
        if column.name == "task":
            pairs = table[["dataset"]].assign(task_set=table.apply(_task_set, axis=1))
            order = [
                name
                for dataset, task_set in dict.fromkeys(map(tuple, pairs.to_numpy()))
                for name in grid.task_names(dataset, task_set)
            ]
            return column.map({n: i for i, n in enumerate(dict.fromkeys([*order, STL_COMBINED]))})
        return column

    keys = [c for c in _SHOWN if c in table]
    return table.sort_values(keys, key=rank, kind="stable", na_position="first")


def to_markdown(table: pd.DataFrame) -> str:
    """The summary as Markdown: method options (others only where they vary), ``mean ± std``."""
    options = list(table.columns[: table.columns.get_loc("n_seeds")])
    shown = [c for c in options if c in _SHOWN or table[c].nunique(dropna=False) > 1]
    metrics = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    header = [*shown, "n_seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for _, row in table.iterrows():
        cells = [_cell(row[c]) for c in shown] + [str(row["n_seeds"])]
        for metric in metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append(f"{mean:.4f}" if _missing(std) else f"{mean:.4f} ± {std:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any) -> str:
    if _missing(value):
        return ""
    return grid.fmt(value) if isinstance(value, float) else str(value)


def plot_vs_sharing(table: pd.DataFrame, metric: str, path: str | Path, title: str) -> None:
    """``metric`` against the sharing ratio, one line per TR / MR setting; baselines dashed.

    An MR setting is one (update interval, strategy, update ratio). Settings measured at a single
    sharing ratio (an interval sweep, say) are left out when another setting has several.
    """
    from matplotlib.figure import Figure

    mean, std = f"{metric}_mean", f"{metric}_std"
    if mean not in table:
        raise DataError(path, f"cannot plot {metric!r}: the runs' metrics have no such key")
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    series = _sharing_series(table)
    if any(len(rows) > 1 for _, rows in series):
        series = [(label, rows) for label, rows in series if len(rows) > 1]
    for label, rows in series:
        axes.errorbar(
            rows["sharing"],
            rows[mean],
            yerr=rows[std].fillna(0.0),
            marker="o",
            capsize=3,
            label=label,
        )
    for method, label, colour, style in _BASELINES:
        selected = _is_stl_combined(table) if method == STL_COMBINED else table["method"] == method
        if selected.sum() == 1:
            axes.axhline(
                table.loc[selected, mean].iloc[0], color=colour, linestyle=style, label=label
            )
    if not series:
        axes.text(0.5, 0.5, "no TR or MR runs", ha="center", va="center", transform=axes.transAxes)
    axes.set(xlabel="sharing ratio p", ylabel=f"{metric} (mean ± std over seeds)", title=title)
    axes.set_xlim(0, 1.02)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def _sharing_series(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows sorted by sharing) for TR and for each MR setting."""
    series = []
    tr = table[table["method"] == "tr"]
    if not tr.empty:
        series.append(("TR", tr.sort_values("sharing")))
    mr = table[table["method"] == "mr"]
    keys = ["update_interval", "strategy", "update_ratio"]
    if not mr.empty:
        for (interval, strategy, ratio), rows in mr.groupby(keys, sort=True):
            label = f"MR (Δ={_cell(interval)}, {strategy}, r={_cell(ratio)})"
            series.append((label, rows.sort_values("sharing")))
    return series


def _is_stl_combined(table: pd.DataFrame) -> pd.Series:
    if "task" not in table:
        return pd.Series(False, index=table.index)
    return (table["method"] == "stl") & (table["task"] == STL_COMBINED)


def write_run_metrics(runs: Runs, folder: str | Path) -> None:
    """One flat JSON of headline metrics per run, so that ``dvc metrics show`` gives a row each.

    Files are named by the run directories' paths below their common parent (``mr/p0.5_s0.json``
    for ``runs/celeba/mr/p0.5_s0``). The folder is rebuilt aside and swapped in, so runs that left
    the grid leave no stale files and an interrupted write leaves the old folder in place.
    """
    folder = Path(folder)
    dirs = [Path(run) for run in runs.frame["run"]]
    parent = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        for run_dir, (_, row) in zip(dirs, runs.frame.iterrows(), strict=True):
            values = {m: float(row[m]) for m in runs.metrics if not _missing(row[m])}
            name = run_dir.relative_to(parent)
            write_json(staging / name.with_name(f"{name.name}.json"), values)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path, metric: str = "fscore", split: str = "test"
) -> dict[str, Path]:
    """Write the results table (CSV, Markdown), per-run metrics and the figure into ``out``."""
    runs = collect(run_dirs, split)
    table = summarise(runs)
    files = grid.report_files(out)
    with atomic_path(files["csv"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    datasets = ", ".join(sorted(runs.frame["dataset"].unique()))
    markdown = f"# Results on {datasets}, {split} split\n\n{to_markdown(table)}"
    write_text(files["markdown"], markdown)
    write_run_metrics(runs, files["metrics"])
    title = f"{datasets}: {metric} vs sharing ratio, MR vs TR"
    plot_vs_sharing(table, metric, files["figure"], title)
    return files
