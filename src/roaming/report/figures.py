"""Every panel of the paper's Figure 1, the training curves and the masks, as PNG files.

Figures are drawn with matplotlib's object API (no global pyplot state, no display needed) and
written atomically. Every one carries its provenance: the dataset, preset and seeds in the
title, the synthetic-data warning when it applies, and the full provenance line at the bottom.
Error bars are the standard deviation over seeds where there are two or more.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from roaming import grid
from roaming.atomic import atomic_path
from roaming.errors import DataError
from roaming.report import catalog
from roaming.report.runs import SYNTHETIC_NOTE, Provenance, missing
from roaming.report.tables import STL_COMBINED, cell, configuration_label

# The horizontal lines: method (or the combined STL baseline), label, colour, style.
BASELINES = (
    ("mtl", "MTL", "gray", "--"),
    ("gradnorm", "GradNorm", "tab:brown", "-."),
    ("mgda", "MGDA-UB", "tab:olive", "-."),
    ("se", "SE-MTL", "tab:purple", "--"),
    (STL_COMBINED, "STL", "black", ":"),
)
_DPI = 110


def _figure(
    prov: Provenance, title: str, size: tuple[float, float] = (7.0, 4.8), split: bool = True
) -> Figure:
    """A figure titled with the dataset, preset, seeds, split (and the synthetic warning)."""
    figure = Figure(figsize=size, layout="constrained")
    figure.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
    seeds = len(prov.seeds)
    heading = (
        f"{catalog.DATASET_LABELS.get(prov.dataset, prov.dataset)}: {title}\n"
        f"preset {prov.preset or 'unknown'}, {prov.data_source} data, "
        f"{seeds} seed{'s' if seeds != 1 else ''}" + (f", {prov.split} split" if split else "")
    )
    if prov.synthetic:
        heading += f"\n{SYNTHETIC_NOTE}"
    figure.suptitle(heading, fontsize="medium", color="darkred" if prov.synthetic else "black")
    figure.text(0.005, 0.005, prov.line(), fontsize=5.5, color="dimgray", ha="left", va="bottom")
    return figure


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)


def _ylabel(metric: str, table: pd.DataFrame) -> str:
    several = bool((table["n_seeds"] > 1).any()) if "n_seeds" in table else False
    spread = "mean ± std over seeds" if several else "one seed"
    return f"{metric} {catalog.arrow(metric)} ({spread})"


def _errorbar(axes: Any, x: Sequence[float], rows: pd.DataFrame, metric: str, **style: Any) -> None:
    std = rows[f"{metric}_std"]
    yerr = None if std.isna().all() else std.fillna(0.0).to_numpy()
    axes.errorbar(x, rows[f"{metric}_mean"].to_numpy(), yerr=yerr, marker="o", capsize=3, **style)


def _baselines(axes: Any, table: pd.DataFrame, metric: str, extra: Sequence[Any] = ()) -> None:
    """Horizontal lines for the single-configuration baselines (and ``extra`` (label, row))."""
    for method, label, colour, style in BASELINES:
        if method == STL_COMBINED:
            selected = (table["method"] == "stl") & (table.get("task") == STL_COMBINED)
        else:
            selected = table["method"] == method
        if selected.sum() == 1:
            value = table.loc[selected, f"{metric}_mean"].iloc[0]
            if not missing(value):
                axes.axhline(value, color=colour, linestyle=style, linewidth=1, label=label)
    for label, row in extra:
        axes.axhline(row[f"{metric}_mean"], color="tab:orange", linestyle="--", label=label)


def _finish(axes: Any, xlabel: str, ylabel: str) -> None:
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="x-small", loc="best")


def _check_metric(table: pd.DataFrame, metric: str, path: str | Path) -> None:
    if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
        raise DataError(path, f"cannot plot {metric!r}: the runs' metrics have no such key")


def figure1_sharing(table: pd.DataFrame, metric: str, prov: Provenance, path: str | Path) -> None:
    """``metric`` against the sharing ratio p, one line per TR / MR setting; baselines flat.

    An MR setting is one (update interval, strategy, update ratio). Settings measured at a single
    sharing ratio (an interval sweep, say) are left out when another setting has several.
    """
    _check_metric(table, metric, path)
    figure = _figure(prov, f"{metric} vs sharing ratio, MR vs TR")
    axes = figure.add_subplot()
    series = []
    tr = table[table["method"] == "tr"]
    if not tr.empty:
        series.append(("TR", tr.sort_values("sharing")))
    mr = table[table["method"] == "mr"]
    for (interval, strategy, ratio), rows in mr.groupby(
        ["update_interval", "strategy", "update_ratio"], sort=True
    ):
        label = f"MR (Δ={cell(interval)}, {strategy}, r={cell(ratio)})"
        series.append((label, rows.sort_values("sharing")))
    if any(len(rows) > 1 for _, rows in series):
        series = [(label, rows) for label, rows in series if len(rows) > 1]
    for label, rows in series:
        _errorbar(axes, rows["sharing"].to_numpy(), rows, metric, label=label)
    _baselines(axes, table, metric)
    axes.set_xlim(0, 1.02)
    _finish(axes, "sharing ratio p", _ylabel(metric, table))
    _save(figure, path)


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{**row, "_index": index} for index, row in table.to_dict("index").items()]


def _series(table: pd.DataFrame, panel: str) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """The panel's series as in :func:`roaming.grid.panel_series`, as table rows."""
    groups = grid.panel_series(_records(table), panel)
    return [(key, table.loc[[row["_index"] for row in rows]]) for key, rows in groups.items()]


def figure1_interval(table: pd.DataFrame, metric: str, prov: Provenance, path: str | Path) -> None:
    """``metric`` against the update interval Δ (log axis) for MR at fixed p, strategy, r.

    TR at the same p (masks that never move: Δ = ∞) and the baselines are horizontal lines.
    """
    _check_metric(table, metric, path)
    unit = "fraction of an epoch" if prov.dataset == "celeba" else "epochs"
    figure = _figure(prov, f"{metric} vs update interval Δ (MR)")
    axes = figure.add_subplot()
    extra, ticks = [], set()
    for (sharing, strategy, ratio), rows in _series(table, "figure1_interval"):
        rows = rows.sort_values("update_interval")
        ticks |= {float(value) for value in rows["update_interval"]}
        label = f"MR (p={cell(sharing)}, {strategy}, r={cell(ratio)})"
        _errorbar(axes, rows["update_interval"].to_numpy(), rows, metric, label=label)
        tr = table[(table["method"] == "tr") & (table["sharing"] == sharing)]
        if len(tr) == 1:
            extra.append((f"TR p={cell(sharing)}", tr.iloc[0]))
    _baselines(axes, table, metric, extra)
    axes.set_xscale("log")
    axes.set_xticks(sorted(ticks), [cell(value) for value in sorted(ticks)])
    axes.xaxis.set_minor_locator(NullLocator())
    _finish(axes, f"update interval Δ ({unit}, log scale)", _ylabel(metric, table))
    _save(figure, path)


def figure1_progress(
    table: pd.DataFrame,
    metric: str,
    prov: Provenance,
    path: str | Path,
    histories: Mapping[str, pd.DataFrame],
    mr_runs: Sequence[str],
) -> None:
    """``metric`` against the update progress r(c).

    Points: the final metric of the update-ratio sweep (random strategy), at r = update_ratio.
    Thin lines: the per-epoch evaluation metric of every MR run in ``mr_runs`` against the r(c)
    its ``history.csv`` recorded (the early epochs mix roaming with ordinary training).
    """
    _check_metric(table, metric, path)
    figure = _figure(prov, f"{metric} vs update progress r(c) (MR)")
    axes = figure.add_subplot()
    labelled = False
    for run in mr_runs:
        evaluation = _evaluation_rows(histories[run])
        if metric not in evaluation or "update_progress" not in evaluation:
            continue
        axes.plot(
            evaluation["update_progress"],
            evaluation[metric],
            color="gray",
            alpha=0.45,
            linewidth=0.8,
            label=None if labelled else "each MR run, per evaluated epoch (history.csv)",
        )
        labelled = True
    for (sharing, interval), rows in _series(table, "figure1_progress"):
        rows = rows.sort_values("update_ratio")
        label = f"MR final (p={cell(sharing)}, Δ={cell(interval)}, random), r = update ratio"
        _errorbar(axes, rows["update_ratio"].to_numpy(), rows, metric, label=label)
    _baselines(axes, table, metric)
    axes.set_xlim(-0.02, 1.02)
    _finish(axes, "update progress r(c)", _ylabel(metric, table))
    _save(figure, path)


def figure1_strategy(table: pd.DataFrame, metric: str, prov: Provenance, path: str | Path) -> None:
    """``metric`` against the update ratio r for both strategies, random and least_align."""
    _check_metric(table, metric, path)
    figure = _figure(prov, f"{metric}: random vs least_align selection (MR)")
    axes = figure.add_subplot()
    styles = {"random": ("tab:blue", "o"), "least_align": ("tab:red", "s")}
    for (sharing, interval), rows in _series(table, "figure1_strategy"):
        for strategy, group in rows.groupby("strategy", sort=True):
            group = group.sort_values("update_ratio")
            colour, _ = styles.get(strategy, ("tab:green", "^"))
            label = f"{strategy} (p={cell(sharing)}, Δ={cell(interval)})"
            _errorbar(
                axes, group["update_ratio"].to_numpy(), group, metric, label=label, color=colour
            )
    _baselines(axes, table, metric)
    axes.set_xlim(0, 1.05)
    _finish(axes, "update ratio r (final update progress)", _ylabel(metric, table))
    _save(figure, path)


def _evaluation_rows(history: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch evaluation rows (CelebA val, dense test) of a history."""
    return history[history["split"] != "train"].sort_values("epoch")


def curve_frame(history: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated epoch: ``train_loss`` and the evaluation split's headline metrics
    (``eval_loss``).

    What ``curves.png`` draws for one run and what ``curves/<method>.csv`` holds for DVC.
    """
    train = history[history["split"] == "train"].set_index("epoch")
    evaluation = _evaluation_rows(history).set_index("epoch")
    headline = [c for c in evaluation.columns if "/" not in c and c not in ("split", "seconds")]
    frame = evaluation[headline].rename(columns={"loss": "eval_loss"})
    frame.insert(0, "train_loss", train["loss"].reindex(frame.index))
    return frame.reset_index()


def curves(
    frames: Mapping[str, pd.DataFrame], metric: str, prov: Provenance, path: str | Path
) -> None:
    """Evaluation ``metric`` and training loss per evaluated epoch, one line per labelled
    curve."""
    figure = _figure(prov, "training curves (first seed)", size=(9.0, 4.4), split=False)
    left, right = figure.subplots(1, 2)
    for label, frame in frames.items():
        if metric in frame:
            left.plot(frame["epoch"], frame[metric], marker=".", label=label)
        right.plot(frame["epoch"], frame["train_loss"], marker=".", label=label)
    split = "validation" if prov.dataset == "celeba" else "test"
    left.set_title(
        f"{metric} {catalog.arrow(metric)} on the {split} split per evaluated epoch",
        fontsize="small",
    )
    right.set_title("training loss (sum over tasks)", fontsize="small")
    _finish(left, "epoch", f"{metric} {catalog.arrow(metric)}")
    _finish(right, "epoch", "loss ↓ (log scale)")
    right.set_yscale("log")
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(figure, path)


def _layer_key(name: str) -> tuple[Any, ...]:
    """Network order of masked-layer names (HDF5 lists groups alphabetically)."""
    first = name.split(".", 1)[0]
    rank = {"stem": 0, "encoder": 1, "decoder": 3}.get(first, 2)
    parts = re.split(r"(\d+)", name)
    return (rank, *((int(p), "") if p.isdigit() else (-1, p) for p in parts))


def read_masks(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``masks.h5``: layer → (masks (U+1, T, N) bool, iterations (U+1,)), in network order."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            layers = {
                name: (np.asarray(file[name]["masks"], bool), np.asarray(file[name]["iterations"]))
                for name in file
            }
    except FileNotFoundError:
        raise DataError(path, "missing (TR and MR runs write their masks while training)") from None
    except (OSError, KeyError) as error:
        raise DataError(path, f"not a valid masks file: {error}") from None
    if not layers:
        raise DataError(path, "holds no masked layer")
    return {name: layers[name] for name in sorted(layers, key=_layer_key)}


def visited_fraction(masks: np.ndarray) -> np.ndarray:
    """After each snapshot, the fraction of (task, channel) pairs any mask so far has used."""
    return np.logical_or.accumulate(masks, axis=0).mean(axis=(1, 2))


def mean_overlap(mask: np.ndarray) -> float:
    """Mean over task pairs of |M_s ∧ M_t| / |M_s ∨ M_t| (intersection over union) of a mask."""
    tasks = mask.shape[0]
    values = []
    for s in range(tasks):
        for t in range(s + 1, tasks):
            union = np.logical_or(mask[s], mask[t]).sum()
            values.append(np.logical_and(mask[s], mask[t]).sum() / union if union else 1.0)
    return float(np.mean(values)) if values else math.nan


def masks_figure(
    layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
    row: Mapping[str, Any],
    last_iteration: int,
    prov: Provenance,
    path: str | Path,
) -> None:
    """One MR run's masks (:func:`read_masks`): per layer, the fraction of (task, channel) pairs
    visited against the training iteration (Lemma 1: 1 once roaming completes), and the final
    masks' task overlap. ``row`` is the run's configuration, ``last_iteration`` its training's."""
    figure = _figure(
        prov, f"masks of {configuration_label(row)}, seed {row['seed']}", size=(10.0, 7.5)
    )
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 2))
    cmap = colormaps["viridis"]
    names = list(layers)
    for k, (name, (masks, iterations)) in enumerate(layers.items()):
        fraction = visited_fraction(masks)
        x = np.append(iterations, max(last_iteration, int(iterations[-1])))
        y = np.append(fraction, fraction[-1])
        colour = cmap(k / max(len(names) - 1, 1))
        top.step(x, y, where="post", color=colour, linewidth=1, label=name)
    top.axhline(
        1.0, color="black", linestyle=":", linewidth=1, label="every pair visited (Lemma 1)"
    )
    top.set_ylim(0, 1.05)
    top.set_title("fraction of (task, channel) pairs a layer's masks have used", fontsize="small")
    top.set(xlabel="training iteration", ylabel="visited fraction")
    top.grid(alpha=0.3)
    top.legend(
        fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layer", title_fontsize=6
    )
    overlaps = [mean_overlap(layers[name][0][-1]) for name in names]
    bottom.bar(
        range(len(names)),
        overlaps,
        color=[cmap(k / max(len(names) - 1, 1)) for k in range(len(names))],
    )
    bottom.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
    bottom.set_ylim(0, 1.0)
    bottom.set_title(
        "mean pairwise task overlap of the final masks (intersection over union)", fontsize="small"
    )
    bottom.set_ylabel("overlap")
    bottom.grid(alpha=0.3, axis="y")
    _save(figure, path)
