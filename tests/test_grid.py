"""params.yaml → runs: counts, ids, paths, command lines, and rejection of bad values."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from roaming import grid
from roaming.data.celeba import TASK_GROUP_NAMES
from roaming.data.dense import CITYSCAPES_CLASSES, NYUV2_CLASSES
from roaming.errors import ConfigError
from roaming.protocol import TASK_SETS

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def config() -> dict[str, Any]:
    return grid.load(PARAMS)


def _celeba(config: dict[str, Any], preset: str = "demo") -> dict[str, Any]:
    return config["presets"][preset]["datasets"]["celeba"]


def _by_method(plan: grid.Plan, dataset: str = "celeba") -> dict[str, list[grid.Run]]:
    methods: dict[str, list[grid.Run]] = {}
    for run in plan.datasets[dataset].runs:
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
    stl = [run for run in _by_method(grid.plan(config))["stl"] if run.seed == 0]
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
    assert run.dir == Path("runs/demo/celeba/mr/p0.8_d0.05_random_r1_s0")
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
        "--threads": str(spec["resources"]["threads"]),  # recorded: bitwise results need it
        "--data-source": "synthetic",  # the demo's fixtures; train refuses a real file
    }
    assert run.shell_args() == " ".join(args)


def test_baseline_and_tr_ids(config: dict[str, Any]) -> None:
    runs = {run.id: run for run in grid.plan(config).runs}
    for method in ("mtl", "gradnorm", "mgda", "se"):
        assert f"celeba/{method}/s0" in runs
    assert "celeba/tr/p0.5_s0" in runs
    assert "--task-steps" in runs["celeba/se/s0"].train_args()  # se has one pass per task
    assert "--task-steps" not in runs["celeba/gradnorm/s0"].train_args()


def test_sweeps_fill_defaults_and_share_runs(config: dict[str, Any]) -> None:
    spec = _celeba(config)
    spec["grid"].update(seeds=[0, 1], stl=False, mtl=False, gradnorm=False, mgda=False, tr={})
    del spec["grid"]["se"]  # a baseline left out is not run
    spec["defaults"]["mr"]["sharing"] = 0.8
    spec["grid"]["mr"] = {
        "table": {},
        "interval": {"update_interval": [0.1, 0.5]},
        "progress": {"strategy": ["random", "least_align"], "update_ratio": [0.5, 1.0]},
    }
    runs = grid.plan(config).datasets["celeba"].runs
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
    assert {run.protocol["epochs"] for run in celeba.runs} == {40}
    assert all(run.metrics.keys() == {"val", "test"} for run in celeba.runs)
    # p ∈ {0.1 … 0.9} and the paper's 0.8, Δ sweep, 2 strategies × 4 ratios, shared runs once
    assert len({r.name for r in methods["mr"] if r.seed == 0}) == 5 + 1 + 4 + 7


@pytest.mark.parametrize(
    "dataset, task_set, names",
    [
        ("cityscapes", "paper", [f"seg_{c}" for c in CITYSCAPES_CLASSES] + ["depth"]),
        ("cityscapes", "standard", ["seg", "depth"]),
        ("nyuv2", "paper", [f"seg_{c}" for c in NYUV2_CLASSES] + ["depth", "normals"]),
        ("nyuv2", "standard", ["seg", "depth", "normals"]),
        ("celeba", "paper", list(TASK_GROUP_NAMES)),
    ],
)
def test_task_names_follow_the_task_set(dataset: str, task_set: str, names: list[str]) -> None:
    assert list(grid.task_names(dataset, task_set)) == names


def test_task_names_counts_match_the_spec() -> None:
    counts = {
        (d, t): len(grid.task_names(d, t)) for d in ("cityscapes", "nyuv2") for t in TASK_SETS
    }
    assert counts == {
        ("cityscapes", "paper"): 8,
        ("cityscapes", "standard"): 2,
        ("nyuv2", "paper"): 15,
        ("nyuv2", "standard"): 3,
    }
    with pytest.raises(ConfigError, match="CelebA has only the 'paper' task set"):
        grid.task_names("celeba", "standard")


@pytest.mark.parametrize(
    "dataset, task_set, n_tasks", [("cityscapes", "paper", 8), ("nyuv2", "standard", 3)]
)
def test_dense_stl_one_run_per_task_in_head_order(
    config: dict[str, Any], dataset: str, task_set: str, n_tasks: int
) -> None:
    spec = config["presets"]["demo"]["datasets"][dataset]
    spec["train"]["task_set"] = task_set
    spec["grid"].update(seeds=[0, 1], stl=True)
    stl = _by_method(grid.plan(config), dataset)["stl"]
    assert len(stl) == n_tasks * 2
    names = grid.task_names(dataset, task_set)
    seed0 = [run for run in stl if run.seed == 0]
    assert [run.task for run in seed0] == list(range(n_tasks))
    assert [run.name for run in seed0] == [f"{name}_s0" for name in names]
    depth = next(run for run in seed0 if run.task_name == "depth")
    assert depth.id == f"{dataset}/stl/depth_s0"
    args = depth.train_args()
    assert args[args.index("--task") + 1] == str(names.index("depth"))
    assert args[args.index("--task-set") + 1] == task_set
    assert "--task-steps" not in args


def test_dense_stl_subset_and_unknown_task(config: dict[str, Any]) -> None:
    spec = config["presets"]["demo"]["datasets"]["nyuv2"]
    spec["grid"]["stl"] = ["normals", "seg_bed"]
    stl = _by_method(grid.plan(config), "nyuv2")["stl"]
    assert [(run.task, run.task_name) for run in stl] == [(0, "seg_bed"), (14, "normals")]
    spec["grid"]["stl"] = ["seg"]  # a standard-set name, not in the paper set
    with pytest.raises(ConfigError, match=r"nyuv2.grid.stl: unknown task\(s\) seg"):
        grid.plan(config)


def test_task_set_is_passed_to_every_dense_run(config: dict[str, Any]) -> None:
    plan = grid.plan(config)
    for name in ("cityscapes", "nyuv2"):
        dataset = plan.datasets[name]
        assert dataset.task_set == "paper"
        for run in dataset.runs:
            args = run.train_args()
            assert args[args.index("--task-set") + 1] == "paper"
            assert run.splits == ("test",)
        mr = _by_method(plan, name)["mr"][0]
        assert mr.name == "p0.5_d1_random_r1_s0"  # Δ in whole epochs
        assert "--task-steps fused" in mr.shell_args()
    # CelebA leaves the task set out: its command lines (and finished runs) stay as they were
    assert all("--task-set" not in run.train_args() for run in plan.datasets["celeba"].runs)


def test_dense_fixtures_and_prepare_args(config: dict[str, Any]) -> None:
    plan = grid.plan(config)
    cityscapes = plan.datasets["cityscapes"]
    assert cityscapes.dense and not plan.datasets["celeba"].dense
    assert cityscapes.raw == Path("data/fixtures/demo/cityscapes")
    assert cityscapes.fixtures_args() == "--seed 0 --n-train 48 --n-test 16 --height 32 --width 64"
    assert cityscapes.prepare_args() == ""  # keep the input size
    assert plan.datasets["celeba"].prepare_args() == "--size 64"
    config["presets"]["demo"]["datasets"]["cityscapes"]["data"]["size"] = [64, 128]
    assert grid.plan(config).datasets["cityscapes"].prepare_args() == "--size 64 128"
    config["presets"]["demo"]["datasets"]["cityscapes"]["data"]["depth"] = "metric_m"
    assert grid.plan(config).datasets["cityscapes"].prepare_args() == (
        "--size 64 128 --depth metric_m"
    )
    nyuv2 = config["presets"]["demo"]["datasets"]["nyuv2"]["data"]
    nyuv2["fixtures"]["format"] = "raw"
    assert grid.plan(config).datasets["nyuv2"].fixtures_args().startswith("--seed 0 --n-train")
    assert "--format raw" in grid.plan(config).datasets["nyuv2"].fixtures_args()
    assert cityscapes.metric == "miou"
    assert cityscapes.report_files["metrics"] == Path("reports/demo/cityscapes/metrics")


def test_paper_preset_dense(config: dict[str, Any]) -> None:
    config["preset"] = "paper"
    plan = grid.plan(config)
    for name, n_tasks, batch, sharing in (("cityscapes", 8, 8, 0.6), ("nyuv2", 15, 2, 0.8)):
        dataset = plan.datasets[name]
        assert dataset.raw == Path(f"data/raw/{name}")
        assert dataset.fixtures is None
        methods = _by_method(plan, name)
        assert len(methods["stl"]) == n_tasks * 3
        assert {run.protocol["epochs"] for run in dataset.runs} == {500}
        assert {run.protocol["batch_size"] for run in dataset.runs} == {batch}
        assert {run.protocol["lr"] for run in dataset.runs} == {0.0001}
        assert all(run.metrics.keys() == {"test"} for run in dataset.runs)
        # the sharing sweep and the paper's p (table), Δ = 1 epoch
        assert {run.sharing for run in methods["mr"]} == {0.1, 0.3, 0.5, 0.7, 0.9, sharing}
        assert {run.update_interval for run in methods["mr"]} == {1.0}
        assert {run.sharing for run in methods["tr"]} == {0.1, 0.3, 0.5, 0.7, 0.9, sharing}


def test_expansion_is_deterministic(config: dict[str, Any]) -> None:
    first = [run.id for run in grid.plan(config).runs]
    assert first == [run.id for run in grid.plan(copy.deepcopy(config)).runs]


def test_demo_dataset_paths(config: dict[str, Any]) -> None:
    celeba = grid.plan(config).datasets["celeba"]
    assert celeba.raw == Path("data/fixtures/demo/celeba")
    assert celeba.fixtures_args() == "--seed 0 --n-train 600 --n-val 150 --n-test 150"
    assert celeba.processed == Path("data/processed/demo/celeba.h5")
    # the demo's CelebA grid has every sweep: every report file, every Figure 1 panel
    assert celeba.report_files == {
        role: Path("reports/demo/celeba") / name for role, name in grid.REPORT_FILES.items()
    }
    assert celeba.report_files["table"] == Path("reports/demo/celeba/table.md")
    assert celeba.report_files["figure1_interval"] == Path(
        "reports/demo/celeba/figure1_interval.png"
    )
    # the dense demo grids have one sharing ratio and no interval or progress sweep
    nyuv2 = grid.plan(config).datasets["nyuv2"]
    assert set(grid.REPORT_FILES) - set(nyuv2.report_files) == {
        "figure1_interval",
        "figure1_progress",
        "figure1_strategy",
    }
    args = shlex.split(celeba.report_args())
    assert args[:6] == ["--metric", "fscore", "--preset", "demo", "--data-source", "synthetic"]
    assert json.loads(args[7]) == config["presets"]["demo"]["datasets"]["celeba"]["defaults"]


def test_report_files_follow_the_sweeps(config: dict[str, Any]) -> None:
    spec = _celeba(config)
    spec["grid"]["mr"] = {"one": {"sharing": [0.3]}}
    spec["grid"]["tr"] = {}
    roles = set(grid.plan(config).datasets["celeba"].report_files)
    assert {"figure1_sharing", "masks"} <= roles
    assert not roles & {"figure1_interval", "figure1_progress", "figure1_strategy"}
    spec["grid"]["mr"]["progress"] = {"strategy": ["least_align"], "update_ratio": [0.5, 1.0]}
    roles = set(grid.plan(config).datasets["celeba"].report_files)
    # least_align alone: no random progress series, and no strategy comparison
    assert not roles & {"figure1_progress", "figure1_strategy"}
    spec["grid"]["mr"]["progress"]["strategy"] = ["random", "least_align"]
    roles = set(grid.plan(config).datasets["celeba"].report_files)
    assert {"figure1_progress", "figure1_strategy"} <= roles
    spec["grid"]["mr"] = {}
    roles = set(grid.plan(config).datasets["celeba"].report_files)
    assert not roles & {"figure1_sharing", "masks"}
    assert "curves" in roles and "claims" in roles


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
DENSE = "presets.demo.datasets.cityscapes"


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
        (f"{DEMO}.train.task_set", "standard", rf"{DEMO}.train.task_set: 'paper' was expected"),
        (f"{DENSE}.train.task_set", "binary", rf"{DENSE}.train.task_set: 'binary' is not one of"),
        (f"{DENSE}.evaluate.splits", ["val", "test"], rf"{DENSE}.evaluate.splits.0: 'val'"),
        (f"{DENSE}.data.size", [64], rf"{DENSE}.data.size: \[64\] is too short"),
        (f"{DENSE}.data.fixtures.height", 16, rf"{DENSE}.data.fixtures.height: 16"),
        (
            f"{DENSE}.data.fixtures.height",
            40,
            rf"{DENSE}.data.fixtures.height: 40 is not a multiple",
        ),
        (f"{DENSE}.data.fixtures.format", "npy", rf"{DENSE}.data.fixtures.format: 'npy'"),
        (f"{DENSE}.data.depth", "disparity", rf"{DENSE}.data.depth: 'disparity'"),
        (f"{DENSE}.grid.stl", [], rf"{DENSE}.grid.stl"),
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


def test_presets_never_share_an_output_path(config: dict[str, Any]) -> None:
    demo = grid.plan(config)
    paper = grid.plan({**config, "preset": "paper"})
    demo_paths = {p for d in demo.datasets.values() for p in (d.processed, d.report_dir, d.raw)}
    demo_paths |= {run.dir for run in demo.runs}
    paper_paths = {p for d in paper.datasets.values() for p in (d.processed, d.report_dir)}
    paper_paths |= {run.dir for run in paper.runs}
    assert not demo_paths & paper_paths
    assert all(run.dir.parts[:2] == ("runs", "paper") for run in paper.runs)
    assert demo.datasets["celeba"].synthetic and not paper.datasets["celeba"].synthetic


def test_the_grid_makes_the_checks_of_roaming_train(config: dict[str, Any]) -> None:
    """A value `roaming train` would refuse stops the expansion (and `snakemake -n`)."""
    nyuv2 = config["presets"]["demo"]["datasets"]["nyuv2"]
    nyuv2["defaults"]["mr"]["update_interval"] = 0.5  # Δ counts whole epochs here
    with pytest.raises(ConfigError, match=r"nyuv2: run p0\.5_d0\.5_random_r1_s0: "
                       r"--update-interval counts epochs for nyuv2"):  # fmt: skip
        grid.plan(config)


def test_resources_default_to_one_run_per_gpu_and_an_hour_per_split(
    config: dict[str, Any],
) -> None:
    spec = _celeba(config)
    spec["resources"] = {"threads": 3, "gpu": 0, "mem_mb": 1000, "runtime": 5}
    spec["evaluate"]["splits"] = ["val", "test"]
    celeba = grid.plan(config).datasets["celeba"]
    assert celeba.resources["runs_per_gpu"] == 1
    # Side by side in the training's job, the two splits share its threads and memory.
    assert celeba.evaluate_resources == {"threads": 1, "mem_mb": 500, "runtime": 60}


def test_gpu_shares_are_whole_numbers_for_every_dataset(config: dict[str, Any]) -> None:
    config["preset"] = "paper"
    datasets = config["presets"]["paper"]["datasets"]
    assert grid.plan(config).gpu_shares == 1
    datasets["celeba"]["resources"]["runs_per_gpu"] = 4
    datasets["cityscapes"]["resources"]["runs_per_gpu"] = 6
    plan = grid.plan(config)
    assert plan.gpu_shares == 12
    shares = {name: data.gpu_shares(plan.gpu_shares) for name, data in plan.datasets.items()}
    assert shares == {"celeba": 3, "cityscapes": 2, "nyuv2": 12}  # 4, 6 and 1 runs per GPU
    datasets["nyuv2"]["resources"]["gpu"] = 0
    datasets["nyuv2"]["resources"]["runs_per_gpu"] = 5  # no GPU: does not count
    assert grid.plan(config).gpu_shares == 12
    assert grid.plan(config).datasets["nyuv2"].gpu_shares(12) == 0


def test_runs_per_gpu_must_be_positive(config: dict[str, Any]) -> None:
    _celeba(config)["resources"]["runs_per_gpu"] = 0
    with pytest.raises(ConfigError, match="runs_per_gpu"):
        grid.plan(config)


def test_compute_and_precision_reach_the_runs_they_apply_to(config: dict[str, Any]) -> None:
    _celeba(config)["train"] |= {"compute": "dense", "precision": "bf16", "channels_last": "off"}
    runs = _by_method(grid.plan(config))
    for method, compute in (("mr", True), ("tr", True), ("mtl", False), ("stl", False)):
        run = runs[method][0]
        args = run.shell_args()
        assert ("--compute dense" in args) is compute  # train rejects it for unmasked methods
        assert "--precision bf16 --channels-last off" in args
        assert run.request().precision == "bf16"


def test_a_bad_compute_fails_the_plan(config: dict[str, Any]) -> None:
    _celeba(config)["train"] |= {"compute": "skip", "bn": "running"}
    with pytest.raises(ConfigError, match="--compute skip is not exact with --bn running"):
        grid.plan(config)
