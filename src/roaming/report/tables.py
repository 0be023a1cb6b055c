"""The paper-style tables: one row per configuration, mean ± std over seeds, Δm against STL.

Runs that differ only in their seed form one configuration. The single-task baseline is, per
seed, the STL runs of every task taken together as if they were one multi-task run
(:func:`combine_stl`); Δm compares every multi-task run with the baseline of its own seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from roaming import grid
from roaming.report import catalog
from roaming.report.deltas import delta_m
from roaming.report.runs import NOT_OPTIONS, SHOWN, Runs, missing, task_set_of

# The task column of the combined single-task baseline.
STL_COMBINED = "all"
# Headline metrics that a multi-task run sums over its tasks rather than averages.
_SUMMED_OVER_TASKS = ("loss",)
_METHOD_RANK = {"stl": 0, "mtl": 1, "gradnorm": 2, "mgda": 3, "se": 4, "tr": 5, "mr": 6}


def combine_stl(rows: pd.DataFrame) -> dict[str, float]:
    """One multi-task run's values from single-task rows (final metrics or one epoch's).

    Every per-attribute or per-class key comes from the one task that has it. The loss is the
    sum over tasks, as a multi-task run's loss is the sum of its task losses; a headline metric
    with per-key values (``fscore`` over ``fscore/<attr>``, ``binary_iou`` over its classes)
    becomes the mean over all of them; any other one (depth errors, mIoU of a standard
    segmentation run) the mean over the tasks that report it (one, in practice).
    """
    values: dict[str, float] = {}
    columns = [c for c in rows.columns if pd.api.types.is_numeric_dtype(rows[c])]
    for column in columns:
        present = rows[column].dropna()
        if not present.empty and "/" in column:
            values[column] = float(present.mean())
    for column in columns:
        if "/" in column:
            continue
        present = rows[column].dropna()
        children = [v for k, v in values.items() if k.startswith(f"{column}/")]
        if column in _SUMMED_OVER_TASKS and not present.empty:
            values[column] = float(present.sum())
        elif children:
            values[column] = sum(children) / len(children)
        elif not present.empty:
            values[column] = float(present.mean())
    return values


def stl_baseline(runs: Runs) -> pd.DataFrame:
    """Per seed, the STL runs of all tasks merged into one multi-task run (:func:`combine_stl`).

    Seeds missing a task are left out rather than summarised over fewer tasks.
    """
    frame = runs.frame[runs.frame["method"] == "stl"]
    if frame.empty:
        return frame
    by = [o for o in runs.options if o != "task"] + ["seed"]
    metrics = [c for c in frame.columns if c not in (*runs.options, *NOT_OPTIONS, "run")]
    rows = []
    for _, group in frame.groupby(by, dropna=False, sort=False):
        if set(group["task"]) != set(runs.layout.tasks):
            continue
        combined = combine_stl(group[metrics].apply(pd.to_numeric, errors="coerce"))
        rows.append({**group.iloc[0][by].to_dict(), "task": STL_COMBINED, **combined})
    return pd.DataFrame(rows)


def missing_stl_tasks(runs: Runs, seed: int) -> list[str]:
    """The tasks without an STL run for ``seed``, in task order."""
    frame = runs.frame
    have = set(frame.loc[(frame["method"] == "stl") & (frame["seed"] == seed), "task"])
    return [task for task in runs.layout.tasks if task not in have]


def with_delta_m(runs: Runs, baseline: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every run's row with its three Δm (multi-task runs), and footnotes on the empty ones.

    A run is compared with the combined STL baseline of its own seed; without one (a task has
    no STL run for that seed) or when a value Δm needs is missing, its Δm is left empty and a
    footnote says why.
    """
    frame = runs.frame.copy()
    for name in catalog.DELTA_M:
        frame[name] = float("nan")
    notes: dict[str, None] = {}
    by_seed = {int(row["seed"]): row for _, row in baseline.iterrows()}
    for index, row in frame.iterrows():
        if row["method"] == "stl":
            continue
        seed = int(row["seed"])
        if seed not in by_seed:
            tasks = ", ".join(missing_stl_tasks(runs, seed))
            notes[
                f"Δm is empty for seed {seed}: no STL run of {tasks} (the single-task baseline "
                "needs an STL run of every task: grid.stl: true)."
            ] = None
            continue
        values = _present(row)
        try:
            deltas = delta_m(values, _present(by_seed[seed]), runs.layout)
        except ValueError as error:
            notes[f"Δm is empty for {configuration_label(row)}, seed {seed}: {error}."] = None
            continue
        for name, value in deltas.items():
            frame.at[index, name] = value
    return frame, list(notes)


def _present(row: pd.Series) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not missing(v)
    }


def summarise(runs: Runs, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration: ``n_seeds``, ``seeds`` and mean and std of each metric.

    ``metrics`` defaults to the headline metrics. Rows (including the combined STL baseline and,
    if the frame has them, Δm columns) come in method order (STL per task, then combined, MTL,
    GradNorm, MGDA-UB, SE-MTL, TR, MR) and then by option values; std is the sample standard
    deviation (empty for a single seed).
    """
    baseline = stl_baseline(runs)
    frame, _ = with_delta_m(runs, baseline)
    return summarise_frame(pd.concat([frame, baseline], ignore_index=True), runs, metrics)


def summarise_frame(
    frame: pd.DataFrame, runs: Runs, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """:func:`summarise` of a frame of run rows (with baseline rows and Δm already added)."""
    keys = [m for m in (runs.metrics if metrics is None else metrics) if m in frame]
    for key in keys:
        frame[key] = pd.to_numeric(frame[key], errors="coerce")
    table = (
        frame.groupby(runs.options, dropna=False, sort=False)
        .agg(
            n_seeds=("seed", "count"),
            seeds=("seed", lambda s: " ".join(str(int(v)) for v in sorted(s))),
            **{f"{m}_{s}": (m, s) for m in keys for s in ("mean", "std")},
        )
        .reset_index()
    )
    return _sort(table).reset_index(drop=True)


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    def rank(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(_METHOD_RANK).fillna(len(_METHOD_RANK))
        if column.name == "task":
            names = grid.task_names(table["dataset"].iloc[0], task_set_of(table.iloc[0]))
            order = {name: i for i, name in enumerate([*names, STL_COMBINED])}
            return column.map(order)
        return column

    keys = [c for c in SHOWN if c in table]
    return table.sort_values(keys, key=rank, kind="stable", na_position="first")


def cell(value: Any) -> str:
    """An option value as it appears in labels: empty when missing, numbers as in run names."""
    if missing(value):
        return ""
    return grid.fmt(float(value)) if isinstance(value, float) else str(value)


def configuration_label(row: pd.Series | dict[str, Any], extra: Iterable[str] = ()) -> str:
    """A configuration as the paper names it: ``MTL``, ``TR p=0.5``, ``MR p=0.5 Δ=0.1 …``.

    ``extra`` names further options that distinguish rows of the same method.
    """
    method = row["method"]
    label = catalog.METHOD_LABELS.get(method, method)
    if method == "stl":
        task = row["task"]
        label += " (all tasks combined)" if task == STL_COMBINED else f" ({task})"
    parts = [label]
    if method in ("tr", "mr"):
        parts.append(f"p={cell(row['sharing'])}")
    if method == "mr":
        parts += [
            f"Δ={cell(row['update_interval'])}",
            str(row["strategy"]),
            f"r={cell(row['update_ratio'])}",
        ]
    parts += [f"{key}={cell(row[key])}" for key in extra if not missing(row.get(key))]
    return " ".join(parts)


def varying_options(table: pd.DataFrame, options: Sequence[str]) -> list[str]:
    """Options besides :data:`SHOWN` that take two values within one method: label them."""
    extra = []
    for option in options:
        if option in SHOWN or option not in table:
            continue
        for _, rows in table.groupby("method"):
            if rows[option].dropna().nunique() > 1:
                extra.append(option)
                break
    return extra


def format_value(metric: str, mean: Any, std: Any) -> str:
    """``mean ± std`` (4 decimals; Δm in percent with 2 and a sign); empty when missing."""
    if missing(mean):
        return ""
    if metric in catalog.DELTA_M:
        text = f"{mean:+.2f}"
        return text if missing(std) else f"{text} ± {std:.2f}"
    return f"{mean:.4f}" if missing(std) else f"{mean:.4f} ± {std:.4f}"


@dataclass
class Table:
    """A rendered table: column headers, rows of cell strings, footnotes."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The table as a Markdown section (title, table, footnotes)."""
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + " --- |" * len(self.headers))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def header(metric: str) -> str:
    """A metric column's header: its key and direction, e.g. ``fscore ↑``."""
    return f"{metric} {catalog.arrow(metric)}"


def build_table(
    title: str,
    table: pd.DataFrame,
    metrics: Sequence[str],
    options: Sequence[str],
    short: bool = False,
) -> Table:
    """Rows of ``table`` labelled as configurations, with ``metrics`` as ``mean ± std``.

    ``short`` heads per-key columns by their key alone (``flat ↑`` for ``binary_iou/flat``): the
    title says what they are.
    """
    extra = varying_options(table, options)
    names = [m.split("/", 1)[-1] if short else m for m in metrics]
    headers = [
        "configuration",
        "n seeds",
        *(f"{n} {catalog.arrow(m)}" for n, m in zip(names, metrics, strict=True)),
    ]
    rows = []
    for _, row in table.iterrows():
        cells = [configuration_label(row, extra), str(row["n_seeds"])]
        cells += [format_value(m, row.get(f"{m}_mean"), row.get(f"{m}_std")) for m in metrics]
        rows.append(cells)
    return Table(title, headers, rows)


def to_csv_frame(
    table: pd.DataFrame, metrics: Sequence[str], options: Sequence[str]
) -> pd.DataFrame:
    """``table.csv``: label, options, seeds, then ``<metric> ↑ mean`` and ``… std`` columns."""
    extra = varying_options(table, options)
    out = pd.DataFrame(
        {"configuration": [configuration_label(r, extra) for _, r in table.iterrows()]}
    )
    for option in options:
        out[option] = table[option].to_numpy()
    out["n_seeds"] = table["n_seeds"].to_numpy()
    out["seeds"] = table["seeds"].to_numpy()
    for metric in metrics:
        for stat in ("mean", "std"):
            column = f"{metric}_{stat}"
            values = table[column] if column in table else float("nan")
            out[f"{header(metric)} {stat}"] = values
    return out
