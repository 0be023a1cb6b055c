# Grid access and input functions. Every path and option comes from roaming.grid, the one
# expansion of params.yaml, so the rules, the report and the tests agree on run ids and paths.
import shlex
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
