"""The Snakemake workflow and the DVC stage around it, run in temporary copies of the repository.

The fast tests lint the workflow and dry-run it (locally and with the SLURM profile). The slow
ones run a tiny grid end to end in a fresh git repository: `dvc repro`, then nothing left to do,
then one sharing ratio edited with `dvc exp run -S`: only that run, its evaluation and the report
run again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from roaming import grid

REPO = Path(__file__).resolve().parents[1]
# What a clone holds that the workflow needs (the package itself is installed in the venv).
WORKFLOW_FILES = (
    "Snakefile",
    "workflow",
    "params.yaml",
    "profiles",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    "src/roaming",
)
DEMO = ("presets", "demo", "datasets", "celeba")


def _env() -> dict[str, str]:
    """The venv's tools first on PATH, as after `source .venv/bin/activate`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}


def _run(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    if ok and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return dest


def _edit_params(repo: Path, edit: dict[str, Any], only_celeba: bool = False) -> None:
    """Merge ``edit`` into the demo dataset's entry of params.yaml (and drop the others)."""
    path = repo / "params.yaml"
    config = yaml.safe_load(path.read_text())
    if only_celeba:
        datasets = config[DEMO[0]][DEMO[1]][DEMO[2]]
        for name in [name for name in datasets if name != DEMO[3]]:
            del datasets[name]
    node = config
    for key in DEMO:
        node = node[key]
    for section, values in edit.items():
        if isinstance(values, dict) and isinstance(node.get(section), dict):
            node[section].update(values)
        else:
            node[section] = values
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a Snakemake (dry) run."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {job: int(count) for job, count in rows if job != "total"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return _copy_workflow(tmp_path / "repo")


def test_lint(repo: Path) -> None:
    result = _run(["snakemake", "--lint"], repo)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_dry_run_requests_every_artifact(repo: Path) -> None:
    plan = grid.plan(grid.load(repo / "params.yaml"))
    result = _run(["snakemake", "-n"], repo)
    n_datasets = len(plan.datasets)
    assert set(plan.datasets) == {"celeba", "cityscapes", "nyuv2"}
    assert _job_counts(result.stdout) == {
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


def test_dry_run_with_slurm_profile_paper_preset(repo: Path) -> None:
    for dataset in ("celeba", "cityscapes", "nyuv2"):  # stand for the real releases
        (repo / "data" / "raw" / dataset).mkdir(parents=True)
    result = _run(
        ["snakemake", "-n", "--profile", "profiles/slurm", "--config", "preset=paper"], repo
    )
    plan = grid.plan({**grid.load(repo / "params.yaml"), "preset": "paper"})
    counts = _job_counts(result.stdout)
    assert counts["train"] == len(plan.runs)
    assert "fixtures" not in counts
    assert counts["prepare"] == 3
    assert counts["report_celeba"] == counts["report_nyuv2"] == counts["index"] == 1
    train = result.stdout.split("rule train:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"resources: .*\bgpu=1\b", train)
    assert "slurm_partition=YOUR_GPU_PARTITION" in train


def test_bad_params_stop_snakemake_naming_the_key(repo: Path) -> None:
    _edit_params(repo, {"train": {"epochs": 0}})
    result = _run(["snakemake", "-n"], repo, ok=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    line = "error: params.yaml: presets.demo.datasets.celeba.train.epochs: 0 is less than the "
    assert line + "minimum of 1" in output
    assert len(output.strip().splitlines()) <= 2  # no schema dump, no traceback


def test_unknown_preset_stops_snakemake(repo: Path) -> None:
    result = _run(["snakemake", "-n", "--config", "preset=nope"], repo, ok=False)
    assert result.returncode != 0
    assert "preset: 'nope' is not one of: demo, paper" in result.stdout + result.stderr


# A grid small enough to train in seconds: MTL, one TR and one MR run, one epoch on 64 images.
TINY = {
    "data": {"fixtures": {"seed": 0, "n_train": 64, "n_val": 32, "n_test": 32}},
    "train": {"epochs": 1, "batch_size": 32, "width": 0.0625},
    "grid": {
        "seeds": [0],
        "stl": False,
        "mtl": True,
        "tr": {"sweep": {"sharing": [0.5]}},
        "mr": {"sweep": {"sharing": [0.5]}},
    },
}


def _benchmarks(repo: Path) -> dict[str, float]:
    """Benchmark file → mtime: a job's benchmark is rewritten exactly when the job runs."""
    root = repo / "logs" / "demo" / "benchmarks"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.tsv")}


@pytest.mark.slow
def test_dvc_repro_then_an_edit_reruns_only_the_affected_jobs(tmp_path: Path) -> None:
    repo = _copy_workflow(tmp_path / "clone")
    _edit_params(repo, TINY, only_celeba=True)  # the dense datasets are dry-run tested above
    (repo / ".gitignore").write_text("__pycache__/\n/.snakemake/\n/logs/\n")
    _run(["git", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]
    _run([*commit, "clone"], repo)

    _run(["dvc", "repro"], repo)
    plan = grid.plan(grid.load(repo / "params.yaml"))
    for run in plan.runs:
        assert (repo / run.model).is_file()
        assert (repo / run.metrics["test"]).is_file()
    assert not (repo / "data" / "fixtures" / "demo" / "celeba").exists()  # temporary
    assert "Nothing to be done" in _run(["snakemake", "-n"], repo).stdout
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo).stdout
    assert "didn't change, skipping" in _run(["dvc", "repro"], repo).stdout
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo).stdout)
    rows = next(iter(shown.values()))["data"]
    # This copy runs CelebA only: the dense datasets' summaries are missing (no data).
    rows = {path: row for path, row in rows.items() if "data" in row}
    assert set(rows) == {"reports/demo/celeba/summary.json"}
    assert set(rows["reports/demo/celeba/summary.json"]["data"]) >= {"mr", "tr", "mtl"}
    table = _run(["dvc", "metrics", "show"], repo).stdout
    assert max(len(line) for line in table.splitlines()) <= 120

    _run(["git", "add", "-A"], repo)
    _run([*commit, "results"], repo)
    before = _benchmarks(repo)
    key = ".".join([*DEMO, "grid", "mr", "sweep", "sharing"])
    _run(["dvc", "exp", "run", "-S", f"{key}=[0.6]"], repo)
    after = _benchmarks(repo)
    redone = {name for name in after if before.get(name) != after[name]}
    new = "celeba/mr/p0.6_d0.1_random_r1_s0"
    assert redone == {
        f"train/{new}.tsv",
        f"evaluate/{new}/test.tsv",
        "report/celeba.tsv",
        "report/index.tsv",
    }
    assert "Nothing to be done" in _run(["snakemake", "-n"], repo).stdout
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo).stdout

    _run(["snakemake", "--report", "reports/report.html"], repo)
    html = (repo / "reports" / "report.html").read_text()
    assert "figure1_sharing.png" in html and "report.html" in html and "index.html" in html


def test_a_value_roaming_train_refuses_stops_the_dry_run(repo: Path) -> None:
    path = repo / "params.yaml"
    config = yaml.safe_load(path.read_text())
    config["presets"]["demo"]["datasets"]["nyuv2"]["defaults"]["mr"]["update_interval"] = 0.5
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = _run(["snakemake", "-n"], repo, ok=False)
    assert result.returncode != 0
    assert "--update-interval counts epochs for nyuv2" in result.stdout + result.stderr
