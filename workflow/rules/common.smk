# Grid access and input functions. Every path and option comes from roaming.grid, the one
# expansion of params.yaml, so the rules, the report and the tests agree on run ids and paths.
import shlex

from roaming import grid
from roaming.errors import ConfigError

try:
    PLAN = grid.plan(config)
except ConfigError as error:  # one line naming the key, not a traceback or a schema dump
    raise SystemExit(f"error: {error}") from None


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    method=r"[a-z_]+",
    name=r"[^/]+",
    split=r"train|val|test",


def dataset_of(wildcards):
    """The dataset of a job, from its {dataset} wildcard."""
    return PLAN.datasets[wildcards.dataset]


def run_of(wildcards):
    """The run of a job, from its {dataset}/{method}/{name} wildcards."""
    return PLAN.run(f"{wildcards.dataset}/{wildcards.method}/{wildcards.name}")


def report_inputs(wildcards):
    """The final test metrics of every run of a dataset: what its report summarises."""
    return [str(run.metrics["test"]) for run in dataset_of(wildcards).runs]


def report_run_dirs(wildcards):
    """The run directories `roaming report` reads, in grid order."""
    return shlex.join(str(run.dir) for run in dataset_of(wildcards).runs)


def all_targets():
    """Everything that must exist: processed data, every model and metrics file, the reports."""
    targets = []
    for data in PLAN.datasets.values():
        targets.append(str(data.processed))
        targets += [str(path) for path in data.report_files.values()]
    for run in PLAN.runs:
        targets.append(str(run.model))
        targets += [str(path) for path in run.metrics.values()]
    return targets
