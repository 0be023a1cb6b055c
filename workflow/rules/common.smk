# Grid access and input functions. Every path and option comes from roaming.grid, the one
# expansion of params.yaml, so the rules, the report and the tests agree on run ids and paths.
import shlex
import sys
from pathlib import Path

from roaming import grid
from roaming.errors import ConfigError
from roaming.protocol import DATASET_LABELS

try:
    PLAN = grid.plan(config)
except ConfigError as error:  # one line naming the key, not a traceback or a schema dump
    raise SystemExit(f"error: {error}") from None

# The split the reports summarise (every preset evaluates it).
REPORT_SPLIT = "test"
# How each file of a dataset's report appears in `snakemake --report`: (subcategory, caption).
# report.html shows the tables and claims rendered; the figures appear as images.
REPORT_ENTRIES = {
    "figure1_sharing": ("Figure 1", "figure1_sharing.rst"),
    "figure1_interval": ("Figure 1", "figure1_interval.rst"),
    "figure1_progress": ("Figure 1", "figure1_progress.rst"),
    "figure1_strategy": ("Figure 1", "figure1_strategy.rst"),
    "page": ("Tables and claims", "page.rst"),
    "curves": ("Training", "curves.rst"),
    "masks": ("Training", "masks.rst"),
}
REPORT_FOLDERS = ("metrics", "curves_data")
# The SLURM profile's values that a user must replace (or delete) before submitting anything.
PLACEHOLDER_PREFIX = "YOUR_"


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


def report_outputs(data):
    """A dataset's report outputs by role, as `roaming report` writes them; the folders
    marked as such, the figures and report.html as entries of `snakemake --report`."""
    outputs = {}
    for role, path in data.report_files.items():
        if role in REPORT_FOLDERS:
            outputs[role] = directory(str(path))
        elif role in REPORT_ENTRIES:
            subcategory, caption = REPORT_ENTRIES[role]
            outputs[role] = report(
                str(path),
                category=DATASET_LABELS.get(data.name, data.name),
                subcategory=subcategory,
                caption=f"../report/{caption}",
            )
        else:
            outputs[role] = str(path)
    return outputs


def all_targets():
    """Everything that must exist: processed data, every model and metrics file, the reports."""
    targets = [str(PLAN.reports_dir / grid.INDEX_FILE)]
    for data in PLAN.datasets.values():
        targets.append(str(data.processed))
        targets += [str(path) for path in data.report_files.values()]
    for run in PLAN.runs:
        targets.append(str(run.model))
        targets += [str(path) for path in run.metrics.values()]
    return targets


def _raw(resource):
    """A resource's value as written in a profile or on the command line, unquoted (or None)."""
    raw = getattr(resource, "raw", None)
    return raw.strip("'\"") if isinstance(raw, str) else raw


def placeholders():
    """`where: key=value` of every default or per-rule resource still holding a placeholder."""
    settings = workflow.resource_settings
    sources = [("default-resources", settings.default_resources or {})]
    sources += [(f"set-resources {rule}", res) for rule, res in settings.overwrite_resources.items()]
    return [
        f"{where}: {key}={_raw(resource)}"
        for where, resources in sources
        for key, resource in resources.items()
        if str(_raw(resource)).startswith(PLACEHOLDER_PREFIX)
    ]


def slurm_partition(wildcards):
    """The partition of a run's jobs: `slurm_gpu_partition` when its preset asks for a GPU, else
    `slurm_partition` (both default resources of profiles/slurm; None when running locally)."""
    defaults = workflow.resource_settings.default_resources or {}
    partition = None
    if dataset_of(wildcards).resources["gpu"]:
        partition = _raw(defaults.get("slurm_gpu_partition"))
    return partition or _raw(defaults.get("slurm_partition"))


def gpu_shares(wildcards):
    """The shares of a GPU a training job takes (see share_gpus); None when no GPU is shared."""
    if PLAN.gpu_shares == 1:
        return None
    return dataset_of(wildcards).gpu_shares(PLAN.gpu_shares)


def share_gpus():
    """Turn `--resources gpu=N` (N devices) into N × PLAN.gpu_shares shares of them.

    Resources are integers, so a training run sharing a GPU with others takes whole shares
    (`gpu_shares`) instead of a fraction of `gpu`; the `gpu` limit is raised to match, since
    every GPU run still asks for one whole device (what a cluster job gets).
    """
    devices = workflow.global_resources.get("gpu")
    if PLAN.gpu_shares > 1 and devices is not None and devices.value is not None:
        shares = devices.value * PLAN.gpu_shares
        workflow.register_resource("gpu_shares", shares)
        workflow.register_resource("gpu", shares)
        print(
            f"{devices.value} GPU(s) shared by up to {shares} training jobs"
            " (params.yaml resources.runs_per_gpu)",
            file=sys.stderr,
        )


_unfilled = placeholders()
if _unfilled:
    raise SystemExit(
        f"error: fill in the SLURM profile (profiles/slurm/config.yaml) first: "
        f"{'; '.join(_unfilled)} (on a cluster without accounts, delete slurm_account)"
    )
share_gpus()
