"""Sharing results with DVC, as the README describes it, between two git clones.

One clone runs the pipeline (`dvc repro`, what `make demo` does), commits dvc.lock and pushes to a
local-directory remote; a fresh clone pulls, does the documented follow-up, and must then have
nothing to do for Snakemake and nothing changed for DVC; one params.yaml edit there reruns
exactly the jobs it affects.
"""

from __future__ import annotations

import shutil
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
    git_repo,
)

from roaming import grid

UP_TO_DATE = "Data and pipelines are up to date"
NOTHING = "Nothing to be done"
# The README's follow-up to `dvc pull`: outputs up to date in the DAG's order, then Snakemake's
# pulled provenance records back as they were (`--touch` rewrites them).
AFTER_PULL = (
    ["snakemake", "--touch", "--cores", "1"],
    ["dvc", "checkout", "--force", ".snakemake/metadata"],
)


@pytest.mark.slow
def test_push_then_pull_into_a_fresh_clone_leaves_nothing_to_do(tmp_path: Path) -> None:
    origin = copy_workflow(tmp_path / "origin")
    shutil.copy2(REPO / ".gitignore", origin / ".gitignore")
    edit_params(origin, TINY, only_celeba=True)
    git_repo(origin)
    call(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], origin)
    call(["dvc", "repro"], origin)
    assert UP_TO_DATE in call(["dvc", "status"], origin).stdout
    assert "didn't change, skipping" in call(["dvc", "repro"], origin).stdout
    call(["git", "add", "-A"], origin)
    call([*GIT_COMMIT, "results"], origin)
    call(["dvc", "push"], origin)

    clone = tmp_path / "clone"
    call(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    call(["dvc", "pull"], clone)
    for command in AFTER_PULL:
        call(command, clone)
    plan = grid.plan(grid.load(clone / "params.yaml"))
    for run in plan.runs:
        for path in (run.model, *run.metrics.values()):
            assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    assert NOTHING in call(["snakemake", "-n"], clone).stdout
    assert UP_TO_DATE in call(["dvc", "status"], clone).stdout
    assert not benchmarks(clone)  # nothing ran in the clone

    params = clone / "params.yaml"
    config = yaml.safe_load(params.read_text())
    node = config
    for key in DEMO:
        node = node[key]
    node["grid"]["mr"]["sweep"]["sharing"] = [0.6]
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    call(["dvc", "repro"], clone)
    new = "celeba/mr/p0.6_d0.1_random_r1_s0"
    assert set(benchmarks(clone)) == {
        f"train/{new}.tsv",
        f"evaluate/{new}/test.tsv",
        "report/celeba.tsv",
        "report/index.tsv",
    }
    assert NOTHING in call(["snakemake", "-n"], clone).stdout
    assert UP_TO_DATE in call(["dvc", "status"], clone).stdout
