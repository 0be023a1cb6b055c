"""``roaming report`` and ``roaming index``: every output file of a dataset's report, and the page.

The files and their names are :data:`roaming.grid.REPORT_FILES`; a Figure 1 panel or the masks
figure is written only when the runs it needs are there (:func:`roaming.grid.report_files`), so
the workflow and this module agree on what exists.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from roaming import grid
from roaming.atomic import atomic_path, write_json, write_text
from roaming.errors import DataError
from roaming.report import catalog, claims, figures, html
from roaming.report.runs import (
    MASKS_FILE,
    SYNTHETIC_NOTE,
    Provenance,
    Runs,
    collect,
    missing,
    provenance,
    read_history,
)
from roaming.report.tables import (
    STL_COMBINED,
    Table,
    build_table,
    combine_stl,
    configuration_label,
    stl_baseline,
    summarise_frame,
    to_csv_frame,
    with_delta_m,
)

_METHOD_ORDER = ("stl", "mtl", "gradnorm", "mgda", "se", "tr", "mr")


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    metric: str | None = None,
    split: str = "test",
    *,
    preset: str | None = None,
    data_source: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a dataset's report of ``run_dirs`` into ``out``; returns the files by role.

    ``metric`` is the headline metric of the figures and claims (default: the dataset's, F-score
    or mIoU); ``preset`` and ``data_source`` (for runs whose configuration does not record it)
    are provenance; ``defaults`` the grid's TR / MR defaults, the configurations the claims and
    ``summary.json`` call TR and MR (see :func:`roaming.report.claims.settings`).
    """
    runs = collect(run_dirs, split, data_source)
    layout = runs.layout
    metric = metric or layout.headline
    histories = {run: read_history(run) for run in runs.frame["run"]}
    runs.frame["final_progress"] = [_final_progress(histories[run]) for run in runs.frame["run"]]
    baseline = stl_baseline(runs)
    frame, notes = with_delta_m(runs, baseline)
    keys = list(
        dict.fromkeys(
            [*runs.metrics, *layout.main, *layout.detail, *catalog.DELTA_M, "final_progress"]
        )
    )
    table = summarise_frame(pd.concat([frame, baseline], ignore_index=True), runs, keys)
    if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
        raise DataError(
            Path(run_dirs[0]), f"cannot report {metric!r}: the runs' metrics have no such key"
        )
    prov = provenance(runs, split, preset)
    chosen = claims.settings(layout.dataset, defaults)
    from_grid = defaults is not None
    options = [o for o in runs.options if o in table]
    files = grid.report_files(out, run_options(runs.frame))
    # Read everything before writing anything: a bad input leaves the old report in place.
    masks = _masks_run(runs, chosen, histories) if "masks" in files else None

    tables = _tables(table, layout, options, notes, split)
    title = f"{layout.label}: results of preset {preset or 'unknown'}"
    write_text(files["table"], _tables_markdown(title, prov, tables))
    _write_csv(files["table_csv"], table, layout, options, prov)

    draw: dict[str, Callable[[Path], None]] = {
        "figure1_sharing": lambda p: figures.figure1_sharing(table, metric, prov, p),
        "figure1_interval": lambda p: figures.figure1_interval(table, metric, prov, p),
        "figure1_progress": lambda p: figures.figure1_progress(
            table, metric, prov, p, histories, _mr_runs(runs)
        ),
        "figure1_strategy": lambda p: figures.figure1_strategy(table, metric, prov, p),
        "masks": lambda p: figures.masks_figure(*masks, prov, p),
    }
    for role, plot in draw.items():
        if role in files:
            plot(files[role])
    curves = _curves(runs, chosen, histories)
    figures.curves(
        {label: frame for label, frame in curves.values()}, metric, prov, files["curves"]
    )
    _replace_folder(files["curves_data"], lambda folder: _write_curves(folder, curves))

    checked = claims.check(table, metric, layout, defaults)
    claims_title = f"Claims of the paper checked on {layout.label}, preset {preset or 'unknown'}"
    write_text(
        files["claims"], claims.to_markdown(checked, metric, prov, chosen, claims_title, from_grid)
    )
    write_json(files["summary"], summary(table, metric, chosen))
    write_run_metrics(runs, files["metrics"])

    section = html.dataset_section(
        anchor=layout.dataset,
        title=layout.label,
        prov=prov,
        figures={role: path for role, path in files.items() if path.suffix == ".png"},
        not_drawn={role: need for role, need in grid.PANEL_NEEDS.items() if role not in files},
        tables=tables,
        claims=html.claims_html(checked, claims.intro(metric, prov, chosen, from_grid)),
    )
    write_text(files["page"], html.page(title, [section]))
    return files


def run_options(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Each run's method and TR / MR options, as :func:`roaming.grid.report_files` takes them."""
    keys = ("method", "sharing", "update_interval", "strategy", "update_ratio")
    return [
        {key: None if missing(row.get(key)) else row.get(key) for key in keys}
        for row in frame.to_dict("records")
    ]


def _final_progress(history: pd.DataFrame) -> float:
    """The update progress r(c) a run reached (NaN for runs without masks)."""
    if "update_progress" not in history or history.empty:
        return float("nan")
    return float(history["update_progress"].iloc[-1])


def _mr_runs(runs: Runs) -> list[str]:
    return list(runs.frame.loc[runs.frame["method"] == "mr", "run"])


def _tables(
    table: pd.DataFrame,
    layout: catalog.Layout,
    options: Sequence[str],
    notes: Sequence[str],
    split: str,
) -> list[Table]:
    main = build_table(
        f"{layout.label}, {split} split: macro metrics and Δm",
        table,
        [*layout.main, *catalog.DELTA_M],
        options,
    )
    n_flat, n_tasks = len(layout.flat), len(layout.tasks)
    main.notes = [
        *notes,
        f"Δm in percent against the combined STL baseline of the same seed (STL runs of every "
        f"task), per seed, then mean ± std: delta_m_metrics ↓ is minus the mean relative "
        f"improvement over {n_flat} metrics, delta_m_tasks ↑ the mean over {n_tasks} tasks of "
        f"each task's mean relative improvement, delta_m_single ↑ the mean over tasks of one "
        f"metric each (docs/protocol.md).",
        "Empty cells: the metric does not apply to the row (an STL run has its own task's "
        "metrics only) or, for Δm, see above.",
    ]
    tables = [main]
    if layout.detail:
        what = "F-score per task group" if layout.dataset == "celeba" else "binary IoU per class"
        tables.append(
            build_table(
                f"{layout.label}, {split} split: {what}", table, layout.detail, options, short=True
            )
        )
    return tables


def _tables_markdown(title: str, prov: Provenance, tables: Sequence[Table]) -> str:
    lines = [f"# {title}", ""]
    if prov.synthetic:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    lines += [f"Provenance: {prov.line()}", ""]
    lines += ["Mean ± std over seeds (n seeds); ↑ higher is better, ↓ lower is better.", ""]
    return "\n".join(lines) + "\n" + "\n".join(t.to_markdown() for t in tables)


def _write_csv(
    path: Path,
    table: pd.DataFrame,
    layout: catalog.Layout,
    options: Sequence[str],
    prov: Provenance,
) -> None:
    metrics = [*layout.main, *catalog.DELTA_M, *layout.detail]
    frame = to_csv_frame(table, metrics, options)
    frame["preset"] = prov.preset or ""
    frame["data_source"] = prov.data_source
    frame["data_fingerprint"] = " ".join(prov.fingerprints)
    frame["commit"] = prov.commit or ""
    frame["date"] = prov.date
    if prov.synthetic:
        frame["note"] = SYNTHETIC_NOTE
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _first_seed_rows(runs: Runs) -> pd.DataFrame:
    frame = runs.frame
    return frame[frame["seed"] == frame["seed"].min()]


def _curves(
    runs: Runs, chosen: Mapping[str, Mapping[str, Any]], histories: Mapping[str, pd.DataFrame]
) -> dict[str, tuple[str, pd.DataFrame]]:
    """Method → (label, curves) for one run per method, first seed: the table setting for
    TR / MR, else the first run; STL as the combined baseline per epoch (when every task has a
    run)."""
    rows = _first_seed_rows(runs)
    result: dict[str, tuple[str, pd.DataFrame]] = {}
    for method in _METHOD_ORDER:
        selected = rows[rows["method"] == method]
        if selected.empty:
            continue
        if method == "stl":
            if set(selected["task"]) == set(runs.layout.tasks):
                label = configuration_label({"method": "stl", "task": STL_COMBINED})
                combined = _combined_history([histories[r] for r in selected["run"]])
                result[method] = (label, figures.curve_frame(combined))
            continue
        preferred = claims.select(selected, method, chosen.get(method, {}))
        row = (preferred if not preferred.empty else selected).iloc[0]
        result[method] = (configuration_label(row), figures.curve_frame(histories[row["run"]]))
    return result


def _combined_history(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The STL runs' histories as one multi-task run's, per (epoch, split) all tasks have."""
    stacked = pd.concat(histories, ignore_index=True)
    rows = []
    for (epoch, split), group in stacked.groupby(["epoch", "split"], sort=True):
        if len(group) == len(histories):
            numeric = group.drop(columns=["epoch", "split"])
            rows.append({"epoch": epoch, "split": split, **combine_stl(numeric)})
    return pd.DataFrame(rows)


def _write_curves(folder: Path, curves: Mapping[str, tuple[str, pd.DataFrame]]) -> None:
    for method, (_, frame) in curves.items():
        frame.to_csv(folder / f"{method}.csv", index=False, float_format="%.6g")


def _masks_run(
    runs: Runs, chosen: Mapping[str, Mapping[str, Any]], histories: Mapping[str, pd.DataFrame]
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The masks figure's run (the MR table setting's first seed, else the first MR run): its
    masks, its row and its last training iteration."""
    rows = _first_seed_rows(runs)
    mr = rows[rows["method"] == "mr"]
    if mr.empty:
        mr = runs.frame[runs.frame["method"] == "mr"]
    preferred = claims.select(mr, "mr", chosen["mr"])
    row = (preferred if not preferred.empty else mr).iloc[0]
    layers = figures.read_masks(Path(row["run"]) / MASKS_FILE)
    return layers, row.to_dict(), int(histories[row["run"]]["iteration"].max())


def summary(
    table: pd.DataFrame, metric: str, chosen: Mapping[str, Mapping[str, Any]]
) -> dict[str, float]:
    """A few headline numbers, flat and numeric for ``dvc metrics show``.

    ``mr`` / ``tr``: the headline metric of the table setting; ``mr_best`` / ``tr_best``: the
    best configuration's; ``mtl``; ``stl``: the combined baseline; ``mr_dm``: the table
    setting's Δm (delta_m_tasks ↑, percent). Keys without runs are left out.
    """
    mean = f"{metric}_mean"
    higher = catalog.higher_is_better(metric)
    values: dict[str, Any] = {}
    for method in ("mr", "tr"):
        rows = table[table["method"] == method]
        selected = claims.select(rows, method, chosen[method])
        if len(selected) == 1:
            values[method] = selected[mean].iloc[0]
            if method == "mr":
                values["mr_dm"] = selected["delta_m_tasks_mean"].iloc[0]
        if not rows[mean].dropna().empty:
            values[f"{method}_best"] = rows[mean].max() if higher else rows[mean].min()
    mtl = table[table["method"] == "mtl"]
    if len(mtl) == 1:
        values["mtl"] = mtl[mean].iloc[0]
    stl = table[(table["method"] == "stl") & (table["task"] == STL_COMBINED)]
    if len(stl) == 1:
        values["stl"] = stl[mean].iloc[0]
    order = ("mr", "mr_best", "tr", "tr_best", "mtl", "stl", "mr_dm")
    return {k: round(float(values[k]), 6) for k in order if k in values and not missing(values[k])}


def _replace_folder(folder: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a folder aside with ``fill`` and swap it in: no stale files, never half-written."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        fill(staging)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_run_metrics(runs: Runs, folder: str | Path) -> None:
    """One flat JSON of headline metrics per run (``metrics/<method>/<name>.json``).

    Files are named by the run directories' paths below their common parent (``mr/p0.5_s0.json``
    for ``runs/demo/celeba/mr/p0.5_s0``); runs that left the grid leave no stale files.
    """
    dirs = [Path(run) for run in runs.frame["run"]]
    parent = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent

    def fill(staging: Path) -> None:
        for run_dir, (_, row) in zip(dirs, runs.frame.iterrows(), strict=True):
            values = {m: float(row[m]) for m in runs.metrics if not missing(row[m])}
            name = run_dir.relative_to(parent)
            write_json(staging / name.with_name(f"{name.name}.json"), values)

    _replace_folder(folder, fill)


def write_index(
    report_dirs: Sequence[str | Path],
    out: str | Path,
    preset: str | None = None,
    summary: str | Path | None = None,
) -> Path:
    """The one page of a preset: each dataset report's section, datasets in the paper's order.

    With ``summary``, also every report's ``summary.json`` in one file, keyed by dataset: the
    preset's DVC metrics, so ``dvc exp show`` names a column ``celeba.mr`` rather than by the
    path of one file per dataset.
    """

    def order(path: Path) -> tuple[int, str]:
        name = path.name
        known = catalog.PAPER_ORDER
        return (known.index(name) if name in known else len(known), name)

    folders = sorted((Path(d) for d in report_dirs), key=order)
    sections = []
    for folder in folders:
        section = html.read_section(folder / grid.REPORT_FILES["page"])
        sections.append(
            (folder.name, catalog.DATASET_LABELS.get(folder.name, folder.name), section)
        )
    synthetic = any(SYNTHETIC_NOTE in section for _, _, section in sections)
    title = f"Maximum Roaming reproduction: results of preset {preset or 'unknown'}"
    if summary is not None:
        merged = {f.name: _read_summary(f / grid.REPORT_FILES["summary"]) for f in folders}
        write_json(summary, merged)
    write_text(out, html.index_page(title, sections, synthetic))
    return Path(out)


def _read_summary(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "no summary: run `roaming report` for this dataset first") from None
    except (OSError, ValueError) as error:
        raise DataError(path, f"unreadable summary ({error})") from None
