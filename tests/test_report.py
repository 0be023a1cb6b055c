"""The report from hand-written run folders: tables, Δm, figures, claims, summary, CLI."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_runs import (
    ALL_ATTRIBUTES,
    celeba_grid,
    celeba_metrics,
    cityscapes_values,
    config,
    dense_metrics,
    write_run,
)
from PIL import Image

from roaming import grid, report
from roaming.cli import main
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
from roaming.data.dense import CITYSCAPES_CLASSES
from roaming.errors import ConfigError, DataError
from roaming.report import catalog, claims, figures, tables
from roaming.report.runs import SYNTHETIC_NOTE, provenance
from roaming.rundir import RunLock

DEMO_DEFAULTS = {
    "tr": {"sharing": 0.5},
    "mr": {"sharing": 0.5, "update_interval": 0.1, "strategy": "random", "update_ratio": 1.0},
}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Two seeds of a CelebA grid with every sweep (values in fake_runs.celeba_grid)."""
    return celeba_grid(tmp_path / "runs")


def _row(table: pd.DataFrame, label: str) -> pd.Series:
    labels = [tables.configuration_label(row) for _, row in table.iterrows()]
    return table.iloc[labels.index(label)]


def _summary(run_dirs: list[Path]) -> pd.DataFrame:
    collected = report.collect(run_dirs)
    keys = [*collected.metrics, *collected.layout.detail, *catalog.DELTA_M]
    return report.summarise(collected, keys)


def _assert_png(path: Path) -> None:
    """A real, non-blank image: decodes, and has many distinct pixel values."""
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


# -- tables -------------------------------------------------------------------------------------


def test_summary_has_one_row_per_configuration_with_mean_and_std(runs: list[Path]) -> None:
    table = _summary(runs)
    # 8 STL groups + combined STL + MTL, GradNorm, MGDA-UB, SE + 2 TR + 7 MR
    assert len(table) == 9 + 4 + 2 + 7
    assert (table["n_seeds"] == 2).all() and set(table["seeds"]) == {"0 1"}
    assert (
        list(table["method"])
        == ["stl"] * 9 + ["mtl", "gradnorm", "mgda", "se"] + ["tr"] * 2 + ["mr"] * 7
    )
    assert list(table["task"][:9]) == [*grid.task_names("celeba"), report.STL_COMBINED]
    mtl = _row(table, "MTL")
    assert mtl["fscore_mean"] == pytest.approx(0.55)
    assert mtl["fscore_std"] == pytest.approx(math.sqrt(0.005))
    assert _row(table, "MR p=0.9 Δ=0.1 random r=1")["fscore_mean"] == pytest.approx(0.9)
    assert _row(table, "MR p=0.5 Δ=0.05 random r=1")["fscore_mean"] == pytest.approx(0.45)
    assert _row(table, "GradNorm")["alpha"] == 0.5
    # a group's F-score is the macro mean of its attributes; an STL run has its own group's only
    assert _row(table, "STL (eyes)")["group_fscore/eyes_mean"] == pytest.approx(0.21)
    assert math.isnan(_row(table, "STL (eyes)")["group_fscore/hair_mean"])


def test_stl_baseline_is_the_macro_mean_over_all_attributes(runs: list[Path]) -> None:
    baseline = report.stl_baseline(report.collect(runs))
    assert list(baseline["seed"]) == [0, 1]
    sizes = [len(group) for group in TASK_GROUPS]
    for seed in (0, 1):
        row = baseline[baseline["seed"] == seed].iloc[0]
        values = [0.1 * (t + 1) + 0.02 * seed for t in range(8)]
        expected = sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)
        assert row["fscore"] == pytest.approx(expected)
        assert row["loss"] == pytest.approx(sum(range(8)))  # the sum of the task losses
        assert row["group_fscore/nose"] == pytest.approx(0.5 + 0.02 * seed)
        assert row[f"fscore/{ATTRIBUTE_NAMES[TASK_GROUPS[7][0]]}"] == pytest.approx(
            0.8 + 0.02 * seed
        )


def test_stl_baseline_skips_seeds_missing_a_group(runs: list[Path]) -> None:
    incomplete = [d for d in runs if d.name != "3_s1"]
    baseline = report.stl_baseline(report.collect(incomplete))
    assert list(baseline["seed"]) == [0]


def test_table_markdown_has_arrows_labels_and_empty_cells(runs: list[Path], tmp_path: Path) -> None:
    files = report.write_report(runs, tmp_path / "out", preset="demo")
    text = files["table"].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert "| precision ↑ | recall ↑ | fscore ↑ | accuracy ↑ |" in header
    assert "| delta_m_metrics ↓ | delta_m_tasks ↑ | delta_m_single ↑ |" in header
    assert "| MTL | 2 | 0.5500 ± 0.0707 |" in text
    assert "| global ↑ | eyes ↑ |" in text  # the per-group table
    assert not re.search(r"\bnan\b", text)
    # an STL row has no Δm and only its own group's F-score
    eyes = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| STL (eyes)")]
    assert [cell.strip() for cell in eyes[0][-3:]] == ["", "", ""]
    assert [cell.strip() for cell in eyes[1][2:]] == ["", "0.2100 ± 0.0141", *[""] * 6]
    assert "preset demo" in text and "seeds 0, 1" in text
    assert SYNTHETIC_NOTE not in text  # the configs say nothing and no fallback was given
    csv = pd.read_csv(files["table_csv"])
    assert len(csv) == 22
    assert csv.loc[csv["configuration"] == "MTL", "fscore ↑ mean"].iloc[0] == pytest.approx(0.55)
    assert {"delta_m_metrics ↓ mean", "group_fscore/beard ↑ std", "seeds"} <= set(csv.columns)
    assert set(csv["data_source"]) == {"unknown"} and set(csv["preset"]) == {"demo"}


def test_single_seed_has_empty_std_and_plain_cells(runs: list[Path], tmp_path: Path) -> None:
    seed0 = [d for d in runs if d.name.endswith("s0")]
    table = _summary(seed0)
    assert (table["n_seeds"] == 1).all()
    assert table["fscore_std"].isna().all()
    files = report.write_report(seed0, tmp_path / "out")
    rows = [line for line in files["table"].read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * (2 + 22) and not any("±" in row for row in rows)
    assert "one seed: no std to compare with" in files["claims"].read_text()


def test_runs_of_two_datasets_are_refused(runs: list[Path], tmp_path: Path) -> None:
    values = cityscapes_values({}, 0.2, 0.1)
    other = write_run(tmp_path, "x/mtl/s0", config("mtl", 0, "cityscapes"), values)
    with pytest.raises(ConfigError, match="several datasets"):
        report.collect([*runs, other])


# -- Δm -----------------------------------------------------------------------------------------


def _celeba_delta_runs(root: Path) -> list[Path]:
    """STL at F = 0.5 (seed 0) and 0.4 (seed 1) for every attribute; MTL 0.1 above STL on the
    9 attributes of the "global" group only (seed 0: 0.6, seed 1: 0.6)."""
    dirs = []
    for seed, stl, mtl_global in ((0, 0.5, 0.6), (1, 0.4, 0.6)):
        for task, group in enumerate(TASK_GROUPS):
            cfg = config("stl", seed, task=task)
            dirs.append(
                write_run(root, f"stl/{task}_s{seed}", cfg, celeba_metrics(stl, 1.0, list(group)))
            )
        values = {i: (mtl_global if i in TASK_GROUPS[0] else stl) for i in ALL_ATTRIBUTES}
        dirs.append(write_run(root, f"mtl/s{seed}", config("mtl", seed), celeba_metrics(values, 1)))
    return dirs


def test_delta_m_celeba_by_hand(tmp_path: Path) -> None:
    table = _summary(_celeba_delta_runs(tmp_path))
    mtl = _row(table, "MTL")
    # seed 0: group "global" +20 %, the other 7 groups 0 → (b) = (c) = 20 / 8 = 2.5;
    # (a) over 40 attributes, 9 of them +20 %: −(9 · 20) / 40 = −4.5.
    # seed 1 (against seed 1's STL, 0.4): +50 % → (b) = (c) = 6.25, (a) = −11.25.
    assert mtl["delta_m_tasks_mean"] == pytest.approx((2.5 + 6.25) / 2)
    assert mtl["delta_m_single_mean"] == pytest.approx((2.5 + 6.25) / 2)
    assert mtl["delta_m_metrics_mean"] == pytest.approx((-4.5 - 11.25) / 2)
    assert mtl["delta_m_tasks_std"] == pytest.approx(np.std([2.5, 6.25], ddof=1))
    assert math.isnan(_row(table, "STL (all tasks combined)")["delta_m_tasks_mean"])


def _cityscapes_delta_runs(root: Path) -> list[Path]:
    """STL: every class's binary IoU 0.5, depth errors 0.2 / 0.1. MTL: IoU of "flat" 0.6, the
    other classes 0.5, depth 0.25 / 0.1."""
    dirs = []
    stl = cityscapes_values({}, 0.2, 0.1)
    for task, name in enumerate(grid.task_names("cityscapes")):
        cfg = config("stl", 0, "cityscapes", task=task)
        dirs.append(write_run(root, f"stl/{name}_s0", cfg, dense_metrics("cityscapes", name, stl)))
    mtl = cityscapes_values({"flat": 0.6}, 0.25, 0.1)
    dirs.append(write_run(root, "mtl/s0", config("mtl", 0, "cityscapes"), mtl))
    return dirs


def test_delta_m_dense_paper_task_set_by_hand(tmp_path: Path) -> None:
    table = _summary(_cityscapes_delta_runs(tmp_path))
    mtl = _row(table, "MTL")
    # relative improvements: IoU flat +0.2, 6 other classes 0, depth abs −0.25, rel 0.
    # (a) over 9 metrics: −100 · (0.2 − 0.25) / 9;  (b) 8 tasks, depth = mean(−0.25, 0):
    # 100 · (0.2 − 0.125) / 8;  (c) depth by its abs error: 100 · (0.2 − 0.25) / 8.
    assert mtl["delta_m_metrics_mean"] == pytest.approx(100 * 0.05 / 9)
    assert mtl["delta_m_tasks_mean"] == pytest.approx(100 * 0.075 / 8)
    assert mtl["delta_m_single_mean"] == pytest.approx(-100 * 0.05 / 8)
    combined = _row(table, "STL (all tasks combined)")
    assert combined["binary_iou_mean"] == pytest.approx(0.5)
    assert math.isnan(combined["miou_mean"])  # no paper-set STL run measures the softmax mIoU


def test_delta_m_dense_standard_task_set_by_hand(tmp_path: Path) -> None:
    stl = {
        "miou": 0.4,
        "pixel_accuracy": 0.7,
        "depth_abs_err": 0.5,
        "depth_rel_err": 0.2,
        "normal_mean": 30.0,
        "normal_median": 25.0,
        "normal_within_11.25": 20.0,
        "normal_within_22.5": 40.0,
        "normal_within_30": 50.0,
    }
    mtl = stl | {
        "miou": 0.5,
        "depth_rel_err": 0.25,
        "normal_mean": 33.0,
        "normal_within_22.5": 44.0,
        "normal_within_30": 55.0,
    }
    dense = {"dataset": "nyuv2", "task_set": "standard"}
    dirs = []
    for task, name in enumerate(grid.task_names("nyuv2", "standard")):
        cfg = config("stl", 0, **dense, task=task)
        dirs.append(write_run(tmp_path, f"stl/{name}_s0", cfg, dense_metrics("nyuv2", name, stl)))
    dirs.append(write_run(tmp_path, "mtl/s0", config("mtl", 0, **dense), {"loss": 1.0, **mtl}))
    row = _row(_summary(dirs), "MTL")
    # improvements: mIoU +0.25; depth 0, −0.25; normals −0.1 (mean), 0, 0, +0.1, +0.1.
    assert row["delta_m_metrics_mean"] == pytest.approx(-100 * 0.1 / 8)
    assert row["delta_m_tasks_mean"] == pytest.approx(100 * (0.25 - 0.125 + 0.02) / 3)
    assert row["delta_m_single_mean"] == pytest.approx(100 * (0.25 + 0 - 0.1) / 3)


def test_an_option_named_like_a_metric_keeps_runs_apart(tmp_path: Path) -> None:
    # CelebA reports a `precision` metric; the `precision` option (fp32, bf16) is another thing.
    dirs = [
        write_run(tmp_path, f"mtl/{precision}_s{seed}", cfg, celeba_metrics(value, 1.0))
        for precision, value in (("fp32", 0.5), ("bf16", 0.7))
        for seed in (0, 1)
        for cfg in [config("mtl", seed, precision=precision)]
    ]
    table = _summary(dirs)
    assert len(table) == 2 and list(table["n_seeds"]) == [2, 2]
    assert sorted(table["run_precision"]) == ["bf16", "fp32"]
    by_option = dict(zip(table["run_precision"], table["precision_mean"], strict=True))
    assert by_option == {"fp32": pytest.approx(0.5), "bf16": pytest.approx(0.7)}


def test_missing_stl_task_leaves_delta_m_empty_and_says_why(
    runs: list[Path], tmp_path: Path
) -> None:
    incomplete = [d for d in runs if d.name not in ("3_s1", "5_s1")]
    files = report.write_report(incomplete, tmp_path / "out")
    text = files["table"].read_text()
    assert "Δm is empty for seed 1: no STL run of mouth, beard" in text
    table = _summary(incomplete)
    mtl = _row(table, "MTL")
    assert mtl["n_seeds"] == 2 and not math.isnan(mtl["delta_m_tasks_mean"])
    assert math.isnan(mtl["delta_m_tasks_std"])  # one paired seed left


# -- figures ------------------------------------------------------------------------------------


def test_write_report_writes_every_file(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    files = report.write_report(runs, out, preset="demo", defaults=DEMO_DEFAULTS)
    assert set(files) == set(grid.REPORT_FILES)
    assert files == grid.report_files(out, report.build.run_options(report.collect(runs).frame))
    for role, path in files.items():
        if path.suffix == ".png":
            _assert_png(path)
        else:
            assert path.exists(), role
    metric_files = sorted(files["metrics"].rglob("*.json"))
    assert len(metric_files) == len(runs)
    mr = json.loads((files["metrics"] / "mr" / "p0.5_s1.json").read_text())
    assert mr == {"loss": 0.2, "precision": 0.5, "recall": 0.5, "fscore": 0.5, "accuracy": 0.5}
    curves = sorted(p.name for p in files["curves_data"].iterdir())
    assert curves == [
        f"{m}.csv" for m in sorted(("stl", "mtl", "gradnorm", "mgda", "se", "tr", "mr"))
    ]
    mtl = pd.read_csv(files["curves_data"] / "mtl.csv")
    assert list(mtl["epoch"]) == [1, 2, 3]
    assert mtl["fscore"].iloc[-1] == pytest.approx(0.5) and "train_loss" in mtl
    stl = pd.read_csv(files["curves_data"] / "stl.csv")
    assert stl["train_loss"].iloc[-1] == pytest.approx(sum(range(8)))  # summed over the 8 tasks
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_report_without_mr_runs_or_sweeps_names_what_is_missing(
    runs: list[Path], tmp_path: Path
) -> None:
    plain = [d for d in runs if d.parent.name not in ("mr",)]
    files = report.write_report(plain, tmp_path / "out")
    assert "masks" not in files and "figure1_interval" not in files
    assert "figure1_sharing" in files  # TR alone still has a sharing panel
    text = files["claims"].read_text()
    assert text.count("not measured (missing:") >= 4
    assert "grid.mr.interval_sweep" in text
    page = files["page"].read_text()
    assert "Figure 1: metric vs update interval Δ: not drawn; needs an MR interval sweep" in page
    _assert_png(files["curves"])


def test_figure_titles_carry_provenance_and_the_synthetic_warning(runs: list[Path]) -> None:
    collected = report.collect(runs, data_source="synthetic")
    prov = provenance(collected, "test", "demo")
    figure = figures._figure(prov, "anything")
    title = figure._suptitle.get_text()
    assert "CelebA: anything" in title and "preset demo, synthetic data, 2 seeds" in title
    assert SYNTHETIC_NOTE in title
    assert prov.line() in [text.get_text() for text in figure.texts]


def test_sweep_panels_follow_the_grid(runs: list[Path]) -> None:
    options = report.build.run_options(report.collect(runs).frame)
    interval = grid.panel_series(options, "figure1_interval")
    assert list(interval) == [(0.5, "random", 1.0)]
    assert sorted({row["update_interval"] for row in interval[(0.5, "random", 1.0)]}) == [
        0.05,
        0.1,
        0.5,
    ]
    assert list(grid.panel_series(options, "figure1_progress")) == [(0.5, 0.1)]
    assert list(grid.panel_series(options, "figure1_strategy")) == [(0.5, 0.1)]
    without = [o for o in options if o["update_interval"] in (None, 0.1)]
    assert "figure1_interval" not in grid.report_roles(without)


def test_masks_visited_fraction_overlap_and_layer_order(tmp_path: Path) -> None:
    masks = np.array(
        [
            [[1, 1, 0, 0], [0, 1, 1, 0]],
            [[0, 1, 1, 0], [0, 0, 1, 1]],
            [[0, 0, 1, 1], [1, 0, 0, 1]],
        ],
        dtype=bool,
    )
    # visited pairs: 4 of 8, then 6 (task 0 adds channel 2, task 1 channel 3), then all 8
    assert figures.visited_fraction(masks).tolist() == [0.5, 0.75, 1.0]
    # final masks {2, 3} and {0, 3}: intersection 1, union 3
    assert figures.mean_overlap(masks[-1]) == pytest.approx(1 / 3)
    names = ["decoder.0.0", "encoder.1.0", "encoder.0.1", "encoder.10.0", "encoder.0.0"]
    assert sorted(names, key=figures._layer_key) == [
        "encoder.0.0",
        "encoder.0.1",
        "encoder.1.0",
        "encoder.10.0",
        "decoder.0.0",
    ]
    resnet = ["layer2.0.downsample", "stem", "layer1.1.conv2", "layer2.0.conv1"]
    assert sorted(resnet, key=figures._layer_key) == [
        "stem",
        "layer1.1.conv2",
        "layer2.0.conv1",
        "layer2.0.downsample",
    ]


def test_masks_figure_needs_masks_h5(runs: list[Path], tmp_path: Path) -> None:
    (runs[0].parent.parent / "mr" / "p0.5_s0" / "masks.h5").unlink()
    with pytest.raises(DataError, match=r"masks\.h5: missing"):
        report.write_report(runs, tmp_path / "out", defaults=DEMO_DEFAULTS)
    assert not (tmp_path / "out").exists()  # nothing written


# -- claims -------------------------------------------------------------------------------------


def test_claims_are_checked_on_the_runs(runs: list[Path]) -> None:
    checked = claims.check(_summary(runs), "fscore", catalog.layout("celeba"), DEMO_DEFAULTS)
    verdicts = [claim.verdict_text for claim in checked]
    # MR (p) beats TR (p/2) at both ratios; F grows with Δ (0.45, 0.5, 0.55) and with r
    # (0.4, 0.5); random 0.5 ≥ least_align 0.48 at r = 1; MR 0.5 is below MTL 0.55 … SE 0.61.
    assert verdicts == [claims.HOLDS] * 4 + [claims.FAILS]
    assert checked[0].evidence[0] == (
        "p = 0.5: MR p=0.5 Δ=0.1 random r=1 0.5000 ± 0.0000 (n=2) vs TR p=0.5 0.2500 ± 0.0000 "
        "(n=2): +0.2500, exceeds one std"
    )
    assert "MTL 0.5500 ± 0.0707 (n=2): -0.0500, within one std" in checked[4].evidence[0]
    assert len(checked[4].evidence) == 4  # MTL, GradNorm, MGDA-UB, SE-MTL


def test_claims_without_their_runs_are_not_measured(runs: list[Path]) -> None:
    # the dataset's reference protocol (MR p = 0.8) was not run: MR vs baselines not measured
    checked = claims.check(_summary(runs), "fscore", catalog.layout("celeba"), None)
    assert checked[4].verdict_text.startswith("not measured (missing: MR with p=0.8, Δ=0.1")
    no_sweeps = [d for d in runs if "_d0" not in d.name and "_r" not in d.name]
    checked = claims.check(_summary(no_sweeps), "fscore", catalog.layout("celeba"), DEMO_DEFAULTS)
    assert [c.verdict for c in checked[1:4]] == [claims.NOT_MEASURED] * 3
    assert checked[0].verdict == claims.HOLDS


def test_claims_that_fail_say_so(runs: list[Path], tmp_path: Path) -> None:
    # MR at p = 0.9 now scores 0.3 (seed 0) and 0.35 (seed 1), below TR's 0.45
    for seed, value in ((0, 0.3), (1, 0.35)):
        metrics = tmp_path / "runs" / "mr" / f"p0.9_s{seed}" / "metrics" / "test.json"
        metrics.write_text(json.dumps(celeba_metrics(value, 0.2)))
    checked = claims.check(_summary(runs), "fscore", catalog.layout("celeba"), DEMO_DEFAULTS)
    assert checked[0].verdict == claims.FAILS
    assert checked[0].evidence[1] == (
        "p = 0.9: MR p=0.9 Δ=0.1 random r=1 0.3250 ± 0.0354 (n=2) vs TR p=0.9 0.4500 ± 0.0000 "
        "(n=2): -0.1250, exceeds one std"
    )


def test_nyuv2_ranks_mr_on_segmentation_normals_and_depth(tmp_path: Path) -> None:
    dense = {"dataset": "nyuv2", "task_set": "standard"}
    base = {
        "miou": 0.3,
        "pixel_accuracy": 0.6,
        "depth_abs_err": 0.6,
        "depth_rel_err": 0.2,
        "normal_mean": 30.0,
        "normal_median": 25.0,
        "normal_within_11.25": 20.0,
        "normal_within_22.5": 40.0,
        "normal_within_30": 50.0,
    }
    dirs = [write_run(tmp_path, "mtl/s0", config("mtl", 0, **dense), {"loss": 1.0, **base})]
    mr = base | {"miou": 0.35, "normal_mean": 28.0, "depth_abs_err": 0.7}
    mr_config = config("mr", 0, **dense, sharing=0.5, update_interval=1)
    dirs.append(write_run(tmp_path, "mr/s0", mr_config, {"loss": 1.0, **mr}))
    table = report.summarise(report.collect(dirs), list(base))
    defaults = {"tr": {"sharing": 0.5}, **{"mr": DEMO_DEFAULTS["mr"] | {"update_interval": 1}}}
    checked = claims.check(table, "miou", catalog.layout("nyuv2", "standard"), defaults)
    assert [c.verdict for c in checked[-2:]] == [claims.HOLDS, claims.HOLDS]
    assert checked[-2].evidence[0] == "miou ↑: MR ranks 1 of 2 (MR 0.3500, MTL 0.3000)"
    assert checked[-1].evidence[0] == "depth_abs_err ↓: MR ranks 2 of 2 (MTL 0.6000, MR 0.7000)"
    assert "GradNorm" in checked[-1].evidence[-1]  # not ranked: no run


def test_claims_markdown_says_synthetic(runs: list[Path], tmp_path: Path) -> None:
    files = report.write_report(
        runs, tmp_path / "out", preset="demo", data_source="synthetic", defaults=DEMO_DEFAULTS
    )
    text = files["claims"].read_text()
    assert text.splitlines()[2] == f"> **{SYNTHETIC_NOTE}**"
    assert "| 1 | MR beats TR at every sharing ratio of the sweep | holds |" in text
    assert "MR is the configuration p=0.5, Δ=0.1, random, r=1 and TR p=0.5 (the grid's" in text
    assert SYNTHETIC_NOTE in files["table"].read_text()
    assert set(pd.read_csv(files["table_csv"])["note"]) == {SYNTHETIC_NOTE}


# -- summary, provenance, configuration ---------------------------------------------------------


def test_summary_json_is_small_flat_and_numeric(runs: list[Path], tmp_path: Path) -> None:
    files = report.write_report(runs, tmp_path / "out", defaults=DEMO_DEFAULTS)
    summary = json.loads(files["summary"].read_text())
    assert list(summary) == ["mr", "mr_best", "tr", "tr_best", "mtl", "stl", "mr_dm"]
    assert summary["mr"] == pytest.approx(0.5) and summary["mr_best"] == pytest.approx(0.9)
    assert summary["tr"] == pytest.approx(0.25) and summary["tr_best"] == pytest.approx(0.45)
    assert summary["mtl"] == pytest.approx(0.55)
    table = _summary(runs)
    row = _row(table, "MR p=0.5 Δ=0.1 random r=1")
    assert summary["mr_dm"] == pytest.approx(row["delta_m_tasks_mean"], abs=1e-6)
    assert all(isinstance(v, float) for v in summary.values())


def test_data_source_comes_from_the_config_else_the_fallback(tmp_path: Path) -> None:
    values = celeba_metrics(0.5, 1.0)
    recorded = write_run(tmp_path, "mtl/s0", config("mtl", 0, data_source="real"), values)
    unrecorded = write_run(tmp_path, "mtl/s1", config("mtl", 1), values)
    frame = report.collect([recorded, unrecorded], data_source="synthetic").frame
    assert list(frame["data_source"]) == ["real", "synthetic"]
    assert list(report.collect([unrecorded]).frame["data_source"]) == ["unknown"]
    prov = provenance(report.collect([recorded, unrecorded], data_source="synthetic"), "test", "p")
    assert prov.synthetic and prov.data_source == "mixed real/synthetic"
    assert report.read_config(recorded)["data_source"] == "real"


def test_missing_metrics_names_the_file(runs: list[Path]) -> None:
    grid.metrics_path(runs[0], "test").unlink()
    with pytest.raises(DataError, match=r"metrics/test\.json: missing"):
        report.collect(runs)


def test_unknown_metric_is_an_error(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="miou"):
        report.write_report(runs, tmp_path / "out", metric="miou")
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_metrics_folder_is_rebuilt_without_stale_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    report.write_report(runs, out)
    files = report.write_report(runs[:-1], out)
    assert len(list(files["metrics"].rglob("*.json"))) == len(runs) - 1
    assert not list(out.glob(".*"))


def test_cli_report_and_index(runs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo" / "celeba"
    defaults = json.dumps(DEMO_DEFAULTS)
    main(
        [
            "report",
            *map(str, runs),
            "--out",
            str(out),
            "--preset",
            "demo",
            "--data-source",
            "synthetic",
            "--defaults",
            defaults,
        ]
    )
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(p) for p in grid.report_files(out).values())
    summary = tmp_path / "demo" / "summary.json"
    index = ["index", str(out), "--out", str(tmp_path / "demo" / "index.html")]
    main([*index, "--preset", "demo", "--summary", str(summary)])
    page = (tmp_path / "demo" / "index.html").read_text()
    assert "results of preset demo" in page and SYNTHETIC_NOTE in page
    assert json.loads(summary.read_text()) == {
        "celeba": json.loads((out / "summary.json").read_text())
    }
    bare = tmp_path / "demo" / "bare"  # a report folder without its summary.json
    bare.mkdir()
    shutil.copy(out / "report.html", bare / "report.html")
    partial = [tmp_path / "bare.html", tmp_path / "bare.json"]
    for argv in (
        ["index", str(bare), "--out", str(partial[0]), "--summary", str(partial[1])],
        ["report", str(tmp_path / "nowhere"), "--out", str(out)],
        ["report", *map(str, runs), "--out", str(out), "--defaults", "{not json"],
        ["report", *map(str, runs), "--out", str(out), "--defaults", '{"mr": {}}'],
        ["index", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.html")],
        [*index, "--summary", str(tmp_path / "s.json"), str(tmp_path / "nowhere")],
    ):
        with pytest.raises(SystemExit) as error:
            main(argv)
        assert error.value.code == 2
    assert "summary.json: no summary" in capsys.readouterr().err
    assert not any(path.exists() for path in partial)


def test_dense_report_with_standard_task_set_and_lower_is_better(tmp_path: Path) -> None:
    dense = {"dataset": "cityscapes", "task_set": "standard"}
    values = {"loss": 1.0, "miou": 0.5, "pixel_accuracy": 0.5}
    values |= {f"iou/{c}": 0.5 for c in CITYSCAPES_CLASSES}
    values |= {"depth_abs_err": 0.5, "depth_rel_err": 0.5}
    dirs = []
    for seed in (0, 1):
        for task, name in enumerate(grid.task_names("cityscapes", "standard")):
            cfg = config("stl", seed, **dense, task=task)
            dirs.append(
                write_run(
                    tmp_path, f"stl/{name}_s{seed}", cfg, dense_metrics("cityscapes", name, values)
                )
            )
        for method in ("tr", "mr"):
            for sharing in (0.3, 0.6):
                v = 0.3 + sharing / 2 + (0.1 if method == "mr" else 0.0)
                cfg = config(method, seed, **dense, sharing=sharing)
                if method == "mr":
                    cfg["update_interval"] = 1
                run_values = values | {"miou": v, "depth_abs_err": 1 - v}
                dirs.append(write_run(tmp_path, f"{method}/p{sharing}_s{seed}", cfg, run_values))
    files = report.write_report(dirs, tmp_path / "out")  # the dense headline: mIoU
    text = files["table"].read_text()
    assert "| miou ↑ | pixel_accuracy ↑ | depth_abs_err ↓ | depth_rel_err ↓ |" in text
    table = _summary(dirs)
    assert _row(table, "STL (all tasks combined)")["loss_mean"] == pytest.approx(2.0)
    for metric in ("miou", "depth_abs_err"):
        out = report.write_report(dirs, tmp_path / f"out_{metric}", metric=metric)
        _assert_png(out["figure1_sharing"])
    checked = (tmp_path / "out_depth_abs_err" / "claims.md").read_text()
    assert "depth_abs_err ↓" in checked
    assert "| 1 | MR beats TR at every sharing ratio of the sweep | holds |" in checked


def test_a_hand_edited_run_record_is_refused_not_merged(runs: list[Path]) -> None:
    """Editing config.json must not move a run into another row: model.pt is the record."""
    edited = next(d for d in runs if d.parent.name == "mr")
    config = json.loads((edited / "config.json").read_text())
    config["sharing"] = 0.123
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"config\.json: does not match .*model\.pt \(sharing"):
        report.collect(runs)


def test_a_run_being_trained_is_not_reported(runs: list[Path]) -> None:
    with RunLock(runs[0]), pytest.raises(DataError, match="still being trained by process"):
        report.collect(runs)
