"""The paper's claims, each checked on the runs the grid trained.

A claim holds, does not hold, or is not measured (the runs it needs are missing, and which ones
are named). Nothing is chosen by looking at the results: MR and TR are the grid's default
configurations (``--defaults``; else the dataset's reference protocol) except where a claim
varies an option, and every comparison is on the report's split. A difference "exceeds one std"
when it is larger than the larger standard deviation of the two configurations (two or more
seeds each).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from roaming import grid
from roaming.datasets import get_dataset
from roaming.report import catalog
from roaming.report.runs import SYNTHETIC_NOTE, Provenance, missing
from roaming.report.tables import cell, configuration_label

HOLDS = "holds"
FAILS = "does not hold"
NOT_MEASURED = "not measured"
# The Δ above which the paper says the metric grows with it (CelebA, fraction of an epoch).
MIN_INTERVAL = 0.05
# "Late in roaming": update ratios from this one on.
LATE = 0.75
_BASELINE_METHODS = ("mtl", "gradnorm", "mgda", "se")
_MR_OPTIONS = ("sharing", "update_interval", "strategy", "update_ratio")


@dataclass
class Claim:
    """One claim, its verdict and the numbers behind it."""

    statement: str
    verdict: str
    evidence: list[str] = field(default_factory=list)
    missing: str | None = None

    @property
    def verdict_text(self) -> str:
        """The verdict, with what is missing when not measured."""
        return f"{NOT_MEASURED} (missing: {self.missing})" if self.missing else self.verdict


def settings(dataset: str, defaults: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The TR and MR configurations the claims call TR and MR.

    ``defaults`` is the grid's (``params.yaml``'s ``defaults``: what its sweeps leave out, the
    paper's table setting); without it, the dataset's reference protocol.
    """
    if defaults is not None:
        return {"tr": dict(defaults["tr"]), "mr": dict(defaults["mr"])}
    protocol = get_dataset(dataset).protocol
    return {
        "tr": {"sharing": protocol.sharing["tr"]},
        "mr": {
            "sharing": protocol.sharing["mr"],
            "update_interval": protocol.update_interval,
            "strategy": "random",
            "update_ratio": 1.0,
        },
    }


def _same(a: Any, b: Any) -> bool:
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b))
    return a == b


def select(table: pd.DataFrame, method: str, options: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``method`` whose options equal ``options``."""
    rows = table[table["method"] == method]
    keep = [all(_same(row[k], v) for k, v in options.items()) for _, row in rows.iterrows()]
    return rows[pd.Series(keep, index=rows.index, dtype=bool)]


@dataclass(frozen=True)
class _Stat:
    label: str
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, row: pd.Series, metric: str, label: str | None = None) -> _Stat:
        return cls(
            label or configuration_label(row),
            float(row[f"{metric}_mean"]),
            float(row[f"{metric}_std"]),
            int(row["n_seeds"]),
        )

    def text(self) -> str:
        spread = "" if missing(self.std) else f" ± {self.std:.4f}"
        return f"{self.label} {self.mean:.4f}{spread} (n={self.n})"


def _better(a: float, b: float, metric: str) -> bool:
    return a > b if catalog.higher_is_better(metric) else a < b


def _compare(a: _Stat, b: _Stat, metric: str) -> tuple[bool, str]:
    """Whether ``a`` is better than ``b``, and the numbers as one line."""
    diff = a.mean - b.mean
    if a.n >= 2 and b.n >= 2 and not (missing(a.std) or missing(b.std)):
        spread = max(a.std, b.std)
        size = "exceeds one std" if abs(diff) > spread else "within one std"
    else:
        size = "one seed: no std to compare with"
    return _better(a.mean, b.mean, metric), f"{a.text()} vs {b.text()}: {diff:+.4f}, {size}"


def _steps(rows: pd.DataFrame, option: str, metric: str, label: str) -> tuple[bool, list[str]]:
    """Whether ``metric`` improves at every step of ``option`` (ascending), with the steps."""
    rows = rows.sort_values(option)
    stats = [_Stat.of(row, metric, f"{label} {cell(row[option])}") for _, row in rows.iterrows()]
    grows, lines = True, []
    for before, after in itertools.pairwise(stats):
        better, line = _compare(after, before, metric)
        grows &= better
        lines.append(line)
    return grows, lines


def check(
    table: pd.DataFrame,
    metric: str,
    layout: catalog.Layout,
    defaults: Mapping[str, Any] | None = None,
) -> list[Claim]:
    """Every claim of the paper that applies to ``layout``'s dataset, checked on ``table``.

    ``table`` is the per-configuration summary (:func:`roaming.report.tables.summarise`) with
    ``metric`` (and, for NYUv2, the segmentation, depth and normals metrics) and, for MR rows,
    ``final_progress`` (the r(c) each run reached).
    """
    chosen = settings(layout.dataset, defaults)
    claims = [
        _mr_beats_tr(table, metric, chosen["mr"]),
        _grows_with_interval(table, metric),
        _grows_with_progress(table, metric),
        _random_beats_least_align(table, metric),
        _mr_beats_baselines(table, metric, chosen),
    ]
    if layout.dataset == "nyuv2":
        claims += _nyuv2(table, layout, chosen)
    return claims


def _mr_beats_tr(table: pd.DataFrame, metric: str, mr: Mapping[str, Any]) -> Claim:
    statement = "MR beats TR at every sharing ratio of the sweep"
    fixed = {k: mr[k] for k in ("update_interval", "strategy", "update_ratio")}
    mr_rows = select(table, "mr", fixed)
    tr_rows = table[table["method"] == "tr"]
    common = sorted({float(p) for p in mr_rows["sharing"]} & {float(p) for p in tr_rows["sharing"]})
    if not common:
        setting = (
            f"Δ={cell(fixed['update_interval'])}, {fixed['strategy']}, "
            f"r={cell(fixed['update_ratio'])}"
        )
        return Claim(
            statement,
            NOT_MEASURED,
            missing=f"TR and MR ({setting}) at a common sharing "
            "ratio (grid.tr and grid.mr sharing sweeps)",
        )
    holds, lines = True, []
    for p in common:
        mr_row = mr_rows[mr_rows["sharing"] == p].iloc[0]
        tr_row = tr_rows[tr_rows["sharing"] == p].iloc[0]
        better, line = _compare(_Stat.of(mr_row, metric), _Stat.of(tr_row, metric), metric)
        holds &= better
        lines.append(f"p = {cell(p)}: {line}")
    return Claim(statement, HOLDS if holds else FAILS, lines)


def _series_claim(
    table: pd.DataFrame,
    metric: str,
    panel: str,
    statement: str,
    option: str,
    keep: Any,
    label: str,
    describe: Any,
) -> Claim:
    """A claim that ``metric`` grows along ``option`` in every series of a sweep panel."""
    series = []
    for key, rows in _panel_rows(table, panel):
        rows = rows[[keep(value) for value in rows[option]]]
        if rows[option].nunique() >= 2:
            series.append((key, rows))
    if not series:
        return Claim(statement, NOT_MEASURED, missing=grid.PANEL_NEEDS[panel])
    holds, lines = True, []
    for key, rows in series:
        grows, steps = _steps(rows, option, metric, label)
        holds &= grows
        lines.append(f"{describe(key)}: " + "; ".join(steps))
        lines += _progress_notes(rows)
    return Claim(statement, HOLDS if holds else FAILS, lines)


def _panel_rows(table: pd.DataFrame, panel: str) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    records = [{**row, "_index": i} for i, row in table.to_dict("index").items()]
    groups = grid.panel_series(records, panel)
    return [(key, table.loc[[r["_index"] for r in rows]]) for key, rows in groups.items()]


def _progress_notes(rows: pd.DataFrame) -> list[str]:
    """Where roaming stopped before its update ratio (too few update events in training)."""
    notes = []
    if "final_progress_mean" not in rows:
        return notes
    for _, row in rows.iterrows():
        reached = row["final_progress_mean"]
        if not missing(reached) and reached < float(row["update_ratio"]) - 1e-6:
            notes.append(
                f"{configuration_label(row)}: roaming reached r(c) = {reached:.2f} only, below "
                f"its update ratio {cell(row['update_ratio'])} (training ended first)"
            )
    return notes


def _grows_with_interval(table: pd.DataFrame, metric: str) -> Claim:
    return _series_claim(
        table,
        metric,
        "figure1_interval",
        f"The metric grows with the update interval Δ once Δ ≥ {MIN_INTERVAL:g} epoch",
        "update_interval",
        lambda value: float(value) >= MIN_INTERVAL,
        "Δ =",
        lambda key: f"MR p={cell(key[0])}, {key[1]}, r={cell(key[2])}",
    )


def _grows_with_progress(table: pd.DataFrame, metric: str) -> Claim:
    return _series_claim(
        table,
        metric,
        "figure1_progress",
        "The metric grows with the update progress r(c) (random selection)",
        "update_ratio",
        lambda value: True,
        "r =",
        lambda key: f"MR p={cell(key[0])}, Δ={cell(key[1])}, random",
    )


def _random_beats_least_align(table: pd.DataFrame, metric: str) -> Claim:
    statement = (
        f"Random selection is at least as good as least_align late in roaming (r ≥ {LATE:g})"
    )
    holds, lines = True, []
    for (sharing, interval), rows in _panel_rows(table, "figure1_strategy"):
        for ratio in sorted({float(r) for r in rows["update_ratio"] if float(r) >= LATE}):
            at = rows[rows["update_ratio"] == ratio]
            by_strategy = {s: at[at["strategy"] == s] for s in ("random", "least_align")}
            if any(rows_.empty for rows_ in by_strategy.values()):
                continue
            a, b = (_Stat.of(rows_.iloc[0], metric) for rows_ in by_strategy.values())
            better, line = _compare(a, b, metric)
            at_least = better or math.isclose(a.mean, b.mean)
            holds &= at_least
            lines.append(f"p={cell(sharing)}, Δ={cell(interval)}, r={cell(ratio)}: {line}")
    if not lines:
        return Claim(
            statement,
            NOT_MEASURED,
            missing=f"{grid.PANEL_NEEDS['figure1_strategy']}, at an update ratio ≥ {LATE:g}",
        )
    return Claim(statement, HOLDS if holds else FAILS, lines)


def _table_rows(table: pd.DataFrame, chosen: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The row of each multi-task method at the table setting (None where not run)."""
    rows: dict[str, Any] = {}
    for method in (*_BASELINE_METHODS, "tr", "mr"):
        selected = select(table, method, chosen.get(method, {}))
        rows[method] = selected.iloc[0] if len(selected) == 1 else None
    return rows


def _setting(method: str, chosen: Mapping[str, Mapping[str, Any]]) -> str:
    """A TR or MR table setting as options: ``p=0.8, Δ=0.1, random, r=1``."""
    options = chosen[method]
    text = f"p={cell(options['sharing'])}"
    if method == "mr":
        text += (
            f", Δ={cell(options['update_interval'])}, {options['strategy']}, "
            f"r={cell(options['update_ratio'])}"
        )
    return text


def _describe(method: str, chosen: Mapping[str, Mapping[str, Any]]) -> str:
    if method in ("tr", "mr"):
        return f"{catalog.METHOD_LABELS[method]} with {_setting(method, chosen)}"
    return catalog.METHOD_LABELS[method]


def _mr_beats_baselines(
    table: pd.DataFrame, metric: str, chosen: Mapping[str, Mapping[str, Any]]
) -> Claim:
    statement = "MR beats MTL, GradNorm, MGDA-UB and SE-MTL"
    rows = _table_rows(table, chosen)
    if rows["mr"] is None:
        return Claim(
            statement,
            NOT_MEASURED,
            missing=f"{_describe('mr', chosen)} (the grid's MR defaults; e.g. grid.mr.table: {{}})",
        )
    present = [m for m in _BASELINE_METHODS if rows[m] is not None]
    absent = [catalog.METHOD_LABELS[m] for m in _BASELINE_METHODS if rows[m] is None]
    if not present:
        return Claim(
            statement,
            NOT_MEASURED,
            missing=", ".join(absent) + " runs (grid.mtl, grid.gradnorm, grid.mgda, grid.se)",
        )
    mr = _Stat.of(rows["mr"], metric)
    holds, lines = True, []
    for method in present:
        better, line = _compare(mr, _Stat.of(rows[method], metric), metric)
        holds &= better
        lines.append(line)
    if absent:
        lines.append(f"not measured against {', '.join(absent)} (no runs)")
    return Claim(statement, HOLDS if holds else FAILS, lines)


def _ranking(
    rows: Mapping[str, Any], metric: str, methods: Sequence[str]
) -> list[tuple[str, float]]:
    values = [
        (catalog.METHOD_LABELS[m], float(rows[m][f"{metric}_mean"]))
        for m in methods
        if rows[m] is not None and not missing(rows[m].get(f"{metric}_mean"))
    ]
    return sorted(values, key=lambda item: item[1], reverse=catalog.higher_is_better(metric))


def _nyuv2(
    table: pd.DataFrame, layout: catalog.Layout, chosen: Mapping[str, Mapping[str, Any]]
) -> list[Claim]:
    """NYUv2: MR best on segmentation and normals, second on depth, among multi-task methods."""
    rows = _table_rows(table, chosen)
    methods = [*_BASELINE_METHODS, "tr", "mr"]
    claims = []
    for statement, task_metrics, rank in (
        (
            "MR is the best multi-task method on segmentation and normals",
            (layout.segmentation, "normal_mean"),
            1,
        ),
        ("MR is the second-best multi-task method on depth", ("depth_abs_err",), 2),
    ):
        if rows["mr"] is None:
            claims.append(Claim(statement, NOT_MEASURED, missing=_describe("mr", chosen)))
            continue
        holds, lines = True, []
        for metric in task_metrics:
            ranking = _ranking(rows, metric, methods)
            others = [label for label, _ in ranking if label != "MR"]
            position = [label for label, _ in ranking].index("MR") + 1
            holds &= position == rank and len(others) >= max(rank - 1, 1)
            listed = ", ".join(f"{label} {value:.4f}" for label, value in ranking)
            lines.append(
                f"{metric} {catalog.arrow(metric)}: MR ranks {position} of "
                f"{len(ranking)} ({listed})"
            )
        absent = [catalog.METHOD_LABELS[m] for m in methods if rows[m] is None]
        if absent:
            lines.append(f"not ranked (no runs at the table setting): {', '.join(absent)}")
        claims.append(Claim(statement, HOLDS if holds else FAILS, lines))
    return claims


def intro(
    metric: str, prov: Provenance, chosen: Mapping[str, Mapping[str, Any]], from_grid: bool
) -> str:
    """What the checks compare, in one paragraph (``from_grid``: the grid gave the defaults)."""
    source = "the grid's defaults" if from_grid else "the dataset's reference protocol"
    return (
        f"Each claim is checked on the headline metric {metric} {catalog.arrow(metric)} of the "
        f"{prov.split} split, mean ± std over seeds (n = seeds per configuration), with the "
        f"configurations the grid trained; nothing is selected by its results. Unless a claim "
        f"varies an option, MR is the configuration {_setting('mr', chosen)} and TR "
        f"{_setting('tr', chosen)} ({source}). "
        "A difference exceeds one std when it is larger than "
        "the larger standard deviation of the two configurations (two or more seeds each)."
    )


def to_markdown(
    claims: Sequence[Claim],
    metric: str,
    prov: Provenance,
    chosen: Mapping[str, Mapping[str, Any]],
    title: str,
    from_grid: bool,
) -> str:
    """``claims.md``: the synthetic warning, provenance, a summary table, then each claim."""
    lines = [f"# {title}", ""]
    if prov.synthetic:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    lines += [f"Provenance: {prov.line()}", "", intro(metric, prov, chosen, from_grid), ""]
    lines += ["| # | claim | verdict |", "| --- | --- | --- |"]
    lines += [f"| {i} | {c.statement} | {c.verdict_text} |" for i, c in enumerate(claims, 1)]
    for i, claim in enumerate(claims, 1):
        lines += ["", f"## {i}. {claim.statement}: {claim.verdict_text}", ""]
        lines += [f"- {line}" for line in claim.evidence] or ["- no runs to compare"]
    return "\n".join(lines) + "\n"
