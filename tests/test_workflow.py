"""The Snakemake workflow and the DVC stage around it, run in temporary copies of the repository.

The fast tests lint the workflow and dry-run it (locally and with the SLURM profile). The slow
ones run a tiny grid end to end in a fresh git repository: `dvc repro`, then nothing left to do,
then one sharing ratio edited with `dvc exp run -S`: only that run, its evaluation and the report
run again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from workflow_copy import (
    DEMO,
    GIT_COMMIT,
    REPO,
    TINY,
    benchmarks,
    call,
    copy_workflow,
    edit_params,
    fill_slurm_profile,
    git_repo,
    job_counts,
)

from roaming import grid


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "repo")


def test_lint(repo: Path) -> None:
    result = call(["snakemake", "--lint"], repo)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_dry_run_requests_every_artifact(repo: Path) -> None:
    plan = grid.plan(grid.load(repo / "params.yaml"))
    result = call(["snakemake", "-n"], repo)
    n_datasets = len(plan.datasets)
    assert set(plan.datasets) == {"celeba", "cityscapes", "nyuv2"}
    assert job_counts(result.stdout) == {
        "fixtures": n_datasets,
        "prepare": n_datasets,
        "train": len(plan.runs),
        "evaluate": sum(len(run.splits) for run in plan.runs),
        **{f"report_{name}": 1 for name in plan.datasets},  # one rule per dataset
        "index": 1,
        "all": 1,
    }
    run = plan.run("celeba/mr/p0.5_d0.1_random_r1_s0")
    assert f"roaming train --data data/processed/demo/celeba.h5 --out {run.dir} " in result.stdout
    assert run.shell_args() in result.stdout
    dense = plan.run("nyuv2/mr/p0.5_d1_random_r1_s0")
    assert f"--out {dense.dir} {dense.shell_args()} --quiet" in result.stdout
    assert "--task-set paper" in dense.shell_args()
    assert (
        "roaming fixtures cityscapes --out data/fixtures/demo/cityscapes --seed 0 --n-train 48"
        " --n-test 16 --height 32 --width 64" in result.stdout
    )
    assert re.search(
        r"--raw data/fixtures/demo/nyuv2 --out data/processed/demo/nyuv2.h5 +--quiet", result.stdout
    )
    assert "roaming report" in result.stdout and "--metric miou" in result.stdout


def _planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"^\s*(?:local)?rule ", output, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^\s*resources: (.*)$", block, flags=re.MULTILINE)
        pairs = found.group(1).split(", ") if found else []
        jobs.append((rule, dict(pair.split("=", 1) for pair in pairs)))
    return jobs


def _slurm_dry_run(repo: Path, preset: str) -> list[tuple[str, dict[str, str]]]:
    """The jobs of ``preset`` as the SLURM profile (with its placeholders filled) plans them."""
    fill_slurm_profile(repo, account="acct", cpu="cpuq", gpu="gpuq")
    for dataset in ("celeba", "cityscapes", "nyuv2"):  # stand for the real releases
        (repo / "data" / "raw" / dataset).mkdir(parents=True, exist_ok=True)
    args = ["snakemake", "-n", "--profile", "profiles/slurm", "--config", f"preset={preset}"]
    return _planned_jobs(call(args, repo).stdout)


def test_slurm_profile_paper_preset_asks_for_a_gpu_for_training_only(repo: Path) -> None:
    jobs = _slurm_dry_run(repo, "paper")
    plan = grid.plan({**grid.load(repo / "params.yaml"), "preset": "paper"})
    rules = [rule for rule, _ in jobs]
    assert rules.count("train") == len(plan.runs)
    assert rules.count("prepare") == 3
    assert rules.count("report_celeba") == rules.count("report_nyuv2") == rules.count("index") == 1
    assert "fixtures" not in rules
    for rule, resources in jobs:
        assert resources.get("slurm_account") == "acct"
        if rule == "train":
            assert resources["gpu"] == "1"
            assert resources["slurm_partition"] == "gpuq"
            assert resources["mem_mb"] == "32000"
        else:
            assert resources.get("gpu", "0") == "0", rule
        if rule == "evaluate":  # in the training's job: a share of it, on its partition
            assert resources["slurm_partition"] == "gpuq"
            assert resources["runtime"] == "30"
            assert resources["mem_mb"] in {"16000", "32000"}  # celeba: val and test; dense: test
        if rule == "prepare":
            assert resources["slurm_partition"] == "cpuq"


def test_slurm_profile_demo_asks_for_no_gpu(repo: Path) -> None:
    jobs = _slurm_dry_run(repo, "demo")
    assert {rule for rule, _ in jobs} >= {"prepare", "train", "evaluate"}
    for rule, resources in jobs:
        assert resources.get("gpu", "0") == "0", rule  # the plugin asks for --gpus only above 0
        if rule in {"prepare", "train", "evaluate"}:
            assert resources["slurm_partition"] == "cpuq", rule


def test_default_profile_leaves_cluster_settings_to_the_slurm_profile() -> None:
    # Snakemake loads profiles/default as the workflow profile, which wins per key over
    # --profile: a key in both would be the default profile's on the cluster too.
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert not set(default) & set(slurm)
    assert not set(default) & {"cores", "latency-wait", "retries", "jobs", "default-resources"}
    assert slurm["latency-wait"] >= 60 and slurm["retries"] >= 1


@pytest.mark.parametrize("dry_run", [True, False])
def test_unfilled_slurm_placeholders_stop_before_submitting(repo: Path, dry_run: bool) -> None:
    args = ["snakemake", "--profile", "profiles/slurm", *(["-n"] if dry_run else [])]
    result = call(args, repo, ok=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "YOUR_" in line]
    assert len(lines) == 1
    assert "slurm_account=YOUR_ACCOUNT" in lines[0]
    assert "slurm_partition=YOUR_CPU_PARTITION" in lines[0]
    assert "delete slurm_account" in lines[0]
    assert not (repo / ".snakemake" / "slurm_logs").exists()  # nothing was submitted

    fill_slurm_profile(repo, account="acct", cpu="cpuq", gpu="YOUR_GPU_PARTITION")
    result = call(args, repo, ok=False)
    assert result.returncode != 0
    assert "slurm_gpu_partition=YOUR_GPU_PARTITION" in result.stderr
    assert "slurm_account=" not in result.stderr


def test_bad_params_stop_snakemake_naming_the_key(repo: Path) -> None:
    edit_params(repo, {"train": {"epochs": 0}})
    result = call(["snakemake", "-n"], repo, ok=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    line = "error: params.yaml: presets.demo.datasets.celeba.train.epochs: 0 is less than the "
    assert line + "minimum of 1" in output
    assert len(output.strip().splitlines()) <= 2  # no schema dump, no traceback


def test_unknown_preset_stops_snakemake(repo: Path) -> None:
    result = call(["snakemake", "-n", "--config", "preset=nope"], repo, ok=False)
    assert result.returncode != 0
    assert "preset: 'nope' is not one of: demo, paper" in result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_repro_then_an_edit_reruns_only_the_affected_jobs(tmp_path: Path) -> None:
    repo = copy_workflow(tmp_path / "clone")
    edit_params(repo, TINY, only_celeba=True)  # the dense datasets are dry-run tested above
    (repo / ".gitignore").write_text("__pycache__/\n/.snakemake/\n/logs/\n")
    git_repo(repo)

    call(["dvc", "repro"], repo)
    plan = grid.plan(grid.load(repo / "params.yaml"))
    for run in plan.runs:
        assert (repo / run.model).is_file()
        assert (repo / run.metrics["test"]).is_file()
    assert not (repo / "data" / "fixtures" / "demo" / "celeba").exists()  # temporary
    assert "Nothing to be done" in call(["snakemake", "-n"], repo).stdout
    assert "Data and pipelines are up to date" in call(["dvc", "status"], repo).stdout
    assert "didn't change, skipping" in call(["dvc", "repro"], repo).stdout
    shown = json.loads(call(["dvc", "metrics", "show", "--json"], repo).stdout)
    rows = next(iter(shown.values()))["data"]
    assert set(rows) == {"reports/demo/summary.json"}  # one file: short column names
    assert set(rows["reports/demo/summary.json"]["data"]) == {"celeba"}  # this copy's datasets
    assert set(rows["reports/demo/summary.json"]["data"]["celeba"]) >= {"mr", "tr", "mtl"}
    table = call(["dvc", "metrics", "show"], repo).stdout
    assert max(len(line) for line in table.splitlines()) <= 120

    call(["git", "add", "-A"], repo)
    call([*GIT_COMMIT, "results"], repo)
    before = benchmarks(repo)
    key = ".".join([*DEMO, "grid", "mr", "sweep", "sharing"])
    call(["dvc", "exp", "run", "-S", f"{key}=[0.6]"], repo)
    after = benchmarks(repo)
    redone = {name for name in after if before.get(name) != after[name]}
    new = "celeba/mr/p0.6_d0.1_random_r1_s0"
    assert redone == {
        f"train/{new}.tsv",
        f"evaluate/{new}/test.tsv",
        "report/celeba.tsv",
        "report/index.tsv",
    }
    assert "Nothing to be done" in call(["snakemake", "-n"], repo).stdout
    assert "Data and pipelines are up to date" in call(["dvc", "status"], repo).stdout
    # As wide as it wants (a terminal of 1000 columns): it still fits in 120, nothing cut.
    wide = {"COLUMNS": "1000"}
    shown = call(["dvc", "exp", "show", "--only-changed", "--no-pager"], repo, extra_env=wide)
    assert "celeba.mr" in shown.stdout and "…" not in shown.stdout
    assert max(len(line.rstrip()) for line in shown.stdout.splitlines()) <= 120

    call(["snakemake", "--report", "reports/report.html"], repo)
    html = (repo / "reports" / "report.html").read_text()
    assert "figure1_sharing.png" in html and "report.html" in html and "index.html" in html


def test_a_value_roaming_train_refuses_stops_the_drycall(repo: Path) -> None:
    path = repo / "params.yaml"
    config = yaml.safe_load(path.read_text())
    config["presets"]["demo"]["datasets"]["nyuv2"]["defaults"]["mr"]["update_interval"] = 0.5
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = call(["snakemake", "-n"], repo, ok=False)
    assert result.returncode != 0
    assert "--update-interval counts epochs for nyuv2" in result.stdout + result.stderr


@pytest.mark.slow
def test_runs_per_gpu_runs_that_many_training_jobs_on_one_gpu(repo: Path) -> None:
    # Two runs that ask for a GPU each, two per GPU: with one device both train at once.
    edit_params(
        repo,
        {
            **TINY,
            "grid": {**TINY["grid"], "tr": {}},
            "resources": {"gpu": 1, "runs_per_gpu": 2},
        },
        only_celeba=True,
    )
    planned = _planned_jobs(call(["snakemake", "-n", "--resources", "gpu=1"], repo).stdout)
    trains = [resources for rule, resources in planned if rule == "train"]
    assert len(trains) == 2
    assert all(res["gpu"] == "1" and res["gpu_shares"] == "1" for res in trains)

    plan = grid.plan(grid.load(repo / "params.yaml"))
    models = [str(run.model) for run in plan.runs]
    result = call(["snakemake", *models, "--cores", "2", "--resources", "gpu=1"], repo)
    assert "1 GPU(s) shared by up to 2 training jobs" in result.stderr
    log = result.stderr
    started = [m.start() for m in re.finditer(r"^(?:local)?rule train:", log, flags=re.MULTILINE)]
    finished = [m.start() for m in re.finditer(r"\(Rule: train\)", log)]
    assert len(started) == len(finished) == 2
    assert started[1] < finished[0]  # the second started before the first finished
