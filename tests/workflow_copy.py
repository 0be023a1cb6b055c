"""Temporary copies of the repository's workflow and the commands the workflow tests run in them.

Shared by the Snakemake/DVC tests (test_workflow.py, test_dvc_sharing.py) and the real-SLURM
test (test_slurm.py), so they copy, edit and run the workflow the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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
GIT_COMMIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]


def env(**extra: str) -> dict[str, str]:
    """The venv's tools first on PATH, as after `source .venv/bin/activate`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **extra}


def call(
    args: list[str],
    cwd: Path,
    ok: bool = True,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command of the workflow in ``cwd``; a failure (when ``ok``) fails the test."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env() | (extra_env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if ok and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow's files in ``dest``, as a clone has them."""
    for name in WORKFLOW_FILES:
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return dest


def edit_params(repo: Path, edit: dict[str, Any], only_celeba: bool = False) -> None:
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


def fill_slurm_profile(repo: Path, *, account: str, cpu: str, gpu: str) -> None:
    """Fill in the account and partitions of the repository's profiles/slurm."""
    path = repo / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"].update(
        slurm_account=account, slurm_partition=cpu, slurm_gpu_partition=gpu
    )
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a Snakemake (dry) run."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {job: int(count) for job, count in rows if job != "total"}


def git_repo(repo: Path, message: str = "clone") -> None:
    """Make ``repo`` a git repository with everything in it committed."""
    call(["git", "init", "-q"], repo)
    call(["git", "add", "-A"], repo)
    call([*GIT_COMMIT, message], repo)


def benchmarks(repo: Path, preset: str = "demo") -> dict[str, int]:
    """Benchmark file → mtime: a job's benchmark is rewritten exactly when the job runs."""
    root = repo / "logs" / preset / "benchmarks"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.tsv")}


# A grid small enough to train in seconds: MTL, one TR and one MR run, one epoch on 64 images.
TINY = {
    "data": {"fixtures": {"seed": 0, "n_train": 64, "n_val": 32, "n_test": 32}},
    "train": {"epochs": 1, "batch_size": 32, "width": 0.0625},
    "grid": {
        "seeds": [0],
        "stl": False,
        "mtl": True,
        "gradnorm": False,
        "mgda": False,
        "se": False,
        "tr": {"sweep": {"sharing": [0.5]}},
        "mr": {"sweep": {"sharing": [0.5]}},
    },
}
