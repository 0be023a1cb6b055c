"""The report from hand-written run folders: aggregation over seeds, the STL baseline, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from roaming import grid, report
from roaming.cli import main
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
from roaming.errors import DataError

_METRICS = ("precision", "recall", "fscore", "accuracy")


def _config(method: str, seed: int, **options: object) -> dict[str, object]:
    """A config.json as `roaming train` writes it (unused keys null)."""
    config = {
        "dataset": "celeba",
        "data": "data/processed/celeba.h5",
        "data_fingerprint": "abc",
        "method": method,
        "model": "resnet18",
        "sharing": None,
        "update_interval": None,
        "update_clock": None,
        "strategy": None,
        "update_ratio": None,
        "task_steps": None,
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.001,
        "width": 0.125,
        "seed": seed,
        "task": None,
        "bn": "batch",
        "device": "cpu",
        "version": "0.1.0",
    }
    config.update(options)
    return config


def _metrics(attributes: list[int], value: float, loss: float) -> dict[str, float]:
    """Flat metrics with every per-attribute value equal to ``value``."""
    metrics = {"loss": loss, **{m: value for m in _METRICS}}
    for index in attributes:
        for m in _METRICS:
            metrics[f"{m}/{ATTRIBUTE_NAMES[index]}"] = value
    return metrics


def _write_run(root: Path, name: str, config: dict, metrics: dict) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / grid.CONFIG_FILE).write_text(json.dumps(config))
    grid.metrics_path(run_dir, "test").parent.mkdir()
    grid.metrics_path(run_dir, "test").write_text(json.dumps(metrics))
    return run_dir


ALL = [i for group in TASK_GROUPS for i in group]


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Two seeds of: STL for all 8 groups, MTL, TR at two ratios, MR at two ratios."""
    dirs = []
    for seed in (0, 1):
        for task, group in enumerate(TASK_GROUPS):
            # group t scores 0.1·(t+1) on seed 0, +0.02 on seed 1; its loss is t
            metrics = _metrics(list(group), 0.1 * (task + 1) + 0.02 * seed, loss=float(task))
            config = _config("stl", seed, task=task)
            dirs.append(_write_run(tmp_path, f"stl/{task}_s{seed}", config, metrics))
        dirs.append(_write_run(tmp_path, f"mtl/s{seed}", _config("mtl", seed),
                               _metrics(ALL, 0.5 + 0.1 * seed, 0.3)))  # fmt: skip
        for p in (0.5, 0.9):
            tr = _config("tr", seed, sharing=p, task_steps="per_task")
            dirs.append(_write_run(tmp_path, f"tr/p{p}_s{seed}", tr, _metrics(ALL, p / 2, 0.4)))
            mr = _config("mr", seed, sharing=p, update_interval=0.1, strategy="random",
                         update_ratio=1.0, task_steps="per_task")  # fmt: skip
            dirs.append(_write_run(tmp_path, f"mr/p{p}_s{seed}", mr, _metrics(ALL, p, 0.2)))
    return dirs


def test_summary_has_one_row_per_configuration_with_mean_and_std(runs: list[Path]) -> None:
    table = report.summarise(report.collect(runs))
    # 8 STL groups + combined STL + MTL + 2 TR + 2 MR
    assert len(table) == 14
    assert (table["n_seeds"] == 2).all()
    assert list(table["method"]) == ["stl"] * 9 + ["mtl"] + ["tr"] * 2 + ["mr"] * 2
    assert list(table["task"][:9]) == [*grid.task_names("celeba"), report.STL_COMBINED]
    mtl = table[table["method"] == "mtl"].iloc[0]
    assert mtl["fscore_mean"] == pytest.approx(0.55)
    assert mtl["fscore_std"] == pytest.approx(math.sqrt(0.005))
    mr = table[table["method"] == "mr"]
    assert list(mr["sharing"]) == [0.5, 0.9]
    assert list(mr["fscore_mean"]) == pytest.approx([0.5, 0.9])
    assert mr["fscore_std"].tolist() == pytest.approx([0.0, 0.0])


def test_loss_weighting_and_se_baselines_sit_between_mtl_and_tr(
    runs: list[Path], tmp_path: Path
) -> None:
    extra = [
        _write_run(tmp_path, f"{method}/s{seed}", _config(method, seed, **options), metrics)
        for seed in (0, 1)
        for method, options, metrics in (
            ("se", {"task_steps": "per_task"}, _metrics(ALL, 0.6, 0.3)),
            ("mgda", {}, _metrics(ALL, 0.7, 0.3)),
            ("gradnorm", {"alpha": 0.5}, _metrics(ALL, 0.8, 0.3)),
        )
    ]
    table = report.summarise(report.collect(runs + extra))
    methods = ["mtl", "gradnorm", "mgda", "se", "tr", "tr", "mr", "mr"]
    assert list(table["method"][9:]) == methods
    assert table.loc[table["method"] == "gradnorm", "alpha"].tolist() == [0.5]
    assert table.loc[table["method"] == "mgda", "fscore_mean"].tolist() == pytest.approx([0.7])
    files = report.write_report(runs + extra, tmp_path / "report")
    assert "| gradnorm |" in files["markdown"].read_text()


def test_stl_baseline_is_the_macro_mean_over_all_attributes(runs: list[Path]) -> None:
    baseline = report.stl_baseline(report.collect(runs))
    assert list(baseline["seed"]) == [0, 1]
    sizes = [len(group) for group in TASK_GROUPS]
    for seed in (0, 1):
        row = baseline[baseline["seed"] == seed].iloc[0]
        values = [0.1 * (t + 1) + 0.02 * seed for t in range(8)]
        expected = sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)
        assert row["fscore"] == pytest.approx(expected)
        # a multi-task run's loss is the sum of its task losses
        assert row["loss"] == pytest.approx(sum(range(8)))


def test_stl_baseline_skips_seeds_missing_a_group(runs: list[Path]) -> None:
    incomplete = [d for d in runs if d.name != "3_s1"]
    baseline = report.stl_baseline(report.collect(incomplete))
    assert list(baseline["seed"]) == [0]


def test_single_seed_has_empty_std_and_plain_markdown_cells(runs: list[Path]) -> None:
    seed0 = [d for d in runs if d.name.endswith("_s0") or d.name == "s0"]
    table = report.summarise(report.collect(seed0))
    assert (table["n_seeds"] == 1).all()
    assert table["fscore_std"].isna().all()
    markdown = report.to_markdown(table)
    assert "±" not in markdown


def test_write_report_writes_every_file(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    files = report.write_report(runs, out)
    assert set(files) == set(grid.REPORT_FILES)
    table = pd.read_csv(files["csv"])
    assert len(table) == 14
    markdown = files["markdown"].read_text()
    assert markdown.count("\n| ") == 16  # header, separator, 14 rows
    assert "0.5500 ± 0.0707" in markdown
    # options that never vary (epochs, lr, …) are left out of the Markdown table
    assert "epochs" not in markdown and "epochs" in table.columns
    metric_files = sorted(files["metrics"].rglob("*.json"))
    assert len(metric_files) == len(runs)
    assert files["metrics"] / "mr" / "p0.5_s1.json" in metric_files
    mr = json.loads((files["metrics"] / "mr" / "p0.5_s1.json").read_text())
    assert mr == {"loss": 0.2, **{m: 0.5 for m in _METRICS}}
    assert files["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_metrics_folder_is_rebuilt_without_stale_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    report.write_report(runs, out)
    files = report.write_report(runs[:-1], out)
    assert len(list(files["metrics"].rglob("*.json"))) == len(runs) - 1
    assert not list(out.glob(".*"))


def test_figure_without_masked_runs_still_written(runs: list[Path], tmp_path: Path) -> None:
    plain = [d for d in runs if d.parent.name in ("stl", "mtl")]
    files = report.write_report(plain, tmp_path / "out")
    assert files["figure"].stat().st_size > 0


def test_missing_metrics_names_the_file(runs: list[Path]) -> None:
    grid.metrics_path(runs[0], "test").unlink()
    with pytest.raises(DataError, match=r"metrics/test\.json: missing"):
        report.collect(runs)


def test_unknown_figure_metric_is_an_error(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="miou"):
        report.write_report(runs, tmp_path / "out", metric="miou")


def test_cli_report(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    main(["report", *map(str, runs), "--out", str(out)])
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(p) for p in grid.report_files(out).values())
    with pytest.raises(SystemExit) as error:
        main(["report", str(tmp_path / "nowhere"), "--out", str(out)])
    assert error.value.code == 2


def _dense_metrics(task: str | None, value: float) -> dict[str, float]:
    """Flat dense metrics as `roaming evaluate` writes them: all tasks, or one STL task."""
    classes = ["flat", "sky"]
    metrics: dict[str, float] = {"loss": 1.0}
    if task in (None, "seg"):
        metrics |= {"miou": value, "pixel_accuracy": value}
        metrics |= {f"iou/{c}": value for c in classes}
    if task in (None, "depth"):
        metrics |= {"depth_abs_err": 1 - value, "depth_rel_err": 1 - value}
    return metrics


def test_dense_report_with_standard_task_set_and_lower_is_better(tmp_path: Path) -> None:
    dense = {"dataset": "cityscapes", "model": "segnet", "task_set": "standard"}
    dirs = []
    for seed in (0, 1):
        for task, name in enumerate(grid.task_names("cityscapes", "standard")):
            config = _config("stl", seed, task=task, **dense)
            dirs.append(
                _write_run(tmp_path, f"stl/{name}_s{seed}", config, _dense_metrics(name, 0.5))
            )
        dirs.append(
            _write_run(
                tmp_path, f"mtl/s{seed}", _config("mtl", seed, **dense), _dense_metrics(None, 0.4)
            )
        )
        for method in ("tr", "mr"):
            for sharing in (0.3, 0.6):
                config = _config(method, seed, sharing=sharing, **dense)
                if method == "mr":
                    config |= {"update_interval": 1, "strategy": "random", "update_ratio": 1.0}
                value = 0.3 + sharing / 2 + (0.1 if method == "mr" else 0.0)
                dirs.append(
                    _write_run(
                        tmp_path,
                        f"{method}/p{sharing}_s{seed}",
                        config,
                        _dense_metrics(None, value),
                    )
                )
    table = report.summarise(report.collect(dirs))
    stl = table[table["method"] == "stl"]
    assert list(stl["task"]) == ["seg", "depth", report.STL_COMBINED]
    combined = stl.iloc[-1]
    assert combined["miou_mean"] == pytest.approx(0.5)
    assert combined["depth_abs_err_mean"] == pytest.approx(0.5)
    assert combined["loss_mean"] == pytest.approx(2.0)  # summed over the two tasks
    for metric in ("miou", "depth_abs_err"):
        files = report.write_report(dirs, tmp_path / f"out_{metric}", metric=metric)
        assert files["figure"].stat().st_size > 0
    rows = json.loads((tmp_path / "out_miou" / "metrics" / "mr" / "p0.6_s0.json").read_text())
    assert rows["miou"] == pytest.approx(0.7)
