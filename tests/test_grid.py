"""params.yaml → runs: counts, ids, paths, command lines, and rejection of bad values."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from roaming import grid
from roaming.data.celeba import TASK_GROUP_NAMES
from roaming.errors import ConfigError

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def config() -> dict[str, Any]:
    return grid.load(PARAMS)


def _celeba(config: dict[str, Any], preset: str = "demo") -> dict[str, Any]:
    return config["presets"][preset]["datasets"]["celeba"]


def _by_method(plan: grid.Plan) -> dict[str, list[grid.Run]]:
    methods: dict[str, list[grid.Run]] = {}
    for run in plan.runs:
        methods.setdefault(run.method, []).append(run)
    return methods


def test_demo_grid(config: dict[str, Any]) -> None:
    plan = grid.plan(config)
    assert plan.preset == "demo"
    methods = _by_method(plan)
    spec = _celeba(config)
    n_seeds = len(spec["grid"]["seeds"])
    tr_sharing = spec["grid"]["tr"]["sharing_sweep"]["sharing"]
    mr_sharing = spec["grid"]["mr"]["sharing_sweep"]["sharing"]
    assert len(methods["stl"]) == len(TASK_GROUP_NAMES) * n_seeds
    assert len(methods["mtl"]) == n_seeds
    assert sorted({run.sharing for run in methods["tr"]}) == sorted(tr_sharing)
    assert sorted({run.sharing for run in methods["mr"]}) == sorted(mr_sharing)
    assert len({run.id for run in plan.runs}) == len(plan.runs)


def test_stl_has_one_run_per_task_group_in_head_order(config: dict[str, Any]) -> None:
    stl = [run for run in grid.plan(config).runs if run.method == "stl" and run.seed == 0]
    assert [run.task for run in stl] == list(range(len(TASK_GROUP_NAMES)))
    assert [run.task_name for run in stl] == list(TASK_GROUP_NAMES)
    assert stl[1].id == "celeba/stl/eyes_s0"
    args = stl[1].train_args()
    assert args[args.index("--task") + 1] == "1"
    assert "--task-steps" not in args  # train rejects it for single-pass methods
    assert "--sharing" not in args


def test_run_ids_paths_and_command_line(config: dict[str, Any]) -> None:
    spec = _celeba(config)
    spec["grid"]["mr"] = {"one": {"sharing": [0.8], "update_interval": [0.05]}}
    run = next(run for run in grid.plan(config).runs if run.method == "mr")
    assert run.id == "celeba/mr/p0.8_d0.05_random_r1_s0"
    assert run.dir == Path("runs/celeba/mr/p0.8_d0.05_random_r1_s0")
    assert run.model == run.dir / "model.pt"
    assert run.metrics == {"test": run.dir / "metrics" / "test.json"}
    args = run.train_args()
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options == {
        "--method": "mr",
        "--sharing": "0.8",
        "--update-interval": "0.05",
        "--strategy": "random",
        "--update-ratio": "1",
        **{f"--{k.replace('_', '-')}": grid.fmt(v) for k, v in spec["train"].items()},
        "--seed": "0",
    }
    assert run.shell_args() == " ".join(args)


def test_tr_and_mtl_ids(config: dict[str, Any]) -> None:
    ids = {run.id for run in grid.plan(config).runs}
    assert "celeba/mtl/s0" in ids
    assert "celeba/tr/p0.5_s0" in ids


def test_sweeps_fill_defaults_and_share_runs(config: dict[str, Any]) -> None:
    spec = _celeba(config)
    spec["grid"].update(seeds=[0, 1], stl=False, mtl=False, tr={})
    spec["grid"]["mr"] = {
        "table": {},
        "interval": {"update_interval": [0.1, 0.5]},
        "progress": {"strategy": ["random", "least_align"], "update_ratio": [0.5, 1.0]},
    }
    runs = grid.plan(config).runs
    names = [run.name for run in runs if run.seed == 0]
    # table = interval[0.1] = progress[random, 1.0]: one run, listed where it first appears
    assert names == [
        "p0.8_d0.1_random_r1_s0",
        "p0.8_d0.5_random_r1_s0",
        "p0.8_d0.1_random_r0.5_s0",
        "p0.8_d0.1_least_align_r0.5_s0",
        "p0.8_d0.1_least_align_r1_s0",
    ]
    assert len(runs) == 10


def test_paper_preset(config: dict[str, Any]) -> None:
    config["preset"] = "paper"
    plan = grid.plan(config)
    celeba = plan.datasets["celeba"]
    assert celeba.fixtures is None
    assert celeba.raw == Path("data/raw/celeba")
    assert celeba.resources["gpu"] == 1
    methods = _by_method(plan)
    assert len(methods["stl"]) == 8 * 3
    assert {run.protocol["epochs"] for run in plan.runs} == {40}
    assert all(run.metrics.keys() == {"val", "test"} for run in plan.runs)
    # p ∈ {0.1 … 0.9} and the paper's 0.8, Δ sweep, 2 strategies × 4 ratios, shared runs once
    assert len({r.name for r in methods["mr"] if r.seed == 0}) == 5 + 1 + 4 + 7


def test_expansion_is_deterministic(config: dict[str, Any]) -> None:
    first = [run.id for run in grid.plan(config).runs]
    assert first == [run.id for run in grid.plan(copy.deepcopy(config)).runs]


def test_demo_dataset_paths(config: dict[str, Any]) -> None:
    celeba = grid.plan(config).datasets["celeba"]
    assert celeba.raw == Path("data/fixtures/celeba")
    assert celeba.fixtures_args() == "--seed 0 --n-train 600 --n-val 150 --n-test 150"
    assert celeba.processed == Path("data/processed/celeba.h5")
    assert celeba.report_files == {
        "csv": Path("reports/celeba/results.csv"),
        "markdown": Path("reports/celeba/results.md"),
        "metrics": Path("reports/celeba/metrics"),
        "figure": Path("reports/celeba/sharing.png"),
    }


def test_plan_run_lookup(config: dict[str, Any]) -> None:
    plan = grid.plan(config)
    assert plan.run("celeba/mtl/s0").method == "mtl"
    with pytest.raises(ConfigError, match="no run 'celeba/mtl/s9'"):
        plan.run("celeba/mtl/s9")


@pytest.mark.parametrize("value, text", [(0.8, "0.8"), (1.0, "1"), (1e-05, "1e-05"), (3, "3")])
def test_fmt(value: float, text: str) -> None:
    assert grid.fmt(value) == text


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value


DEMO = "presets.demo.datasets.celeba"


@pytest.mark.parametrize(
    "path, value, message",
    [
        (f"{DEMO}.train.epochs", 0, rf"{DEMO}.train.epochs: 0 is less than the minimum of 1"),
        (f"{DEMO}.train.device", "gpu", rf"{DEMO}.train.device: 'gpu' is not one of"),
        (f"{DEMO}.train.epoch", 3, rf"{DEMO}.train: .*'epoch' was unexpected"),
        (f"{DEMO}.grid.mr.sharing_sweep.sharing", [0.5, 1.5], rf"{DEMO}.grid.mr.sharing_sweep"),
        (f"{DEMO}.grid.mr.sharing_sweep.strategy", ["greedy"], r"strategy.0: 'greedy'"),
        (f"{DEMO}.grid.seeds", [], rf"{DEMO}.grid.seeds: \[\] should be non-empty"),
        (f"{DEMO}.evaluate.splits", ["val"], rf"{DEMO}.evaluate.splits: .*contain"),
        (f"{DEMO}.data.raw", "data/raw/celeba", rf"{DEMO}.data: .* valid under each of"),
        ("presets.demo.datasets.mnist", {}, r"presets.demo.datasets: .*'mnist' was unexpected"),
        ("preset", "nope", r"preset: 'nope' is not one of: demo, paper"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(
    config: dict[str, Any], path: str, value: Any, message: str
) -> None:
    _set(config, path, value)
    with pytest.raises(ConfigError, match=message):
        grid.plan(config)


def test_load_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text(PARAMS.read_text().replace("epochs: 3", "epochs: three"))
    with pytest.raises(ConfigError, match=r"train.epochs: 'three' is not of type 'integer'"):
        grid.load(bad)
