# The roaming pipeline: fixtures → prepare → train → evaluate → report, one job per step of one
# dataset or run. params.yaml is the only configuration; roaming.grid expands it into runs. The
# rules live in workflow/rules/, the input functions in workflow/rules/common.smk.
import signal

from snakemake.utils import min_version

min_version("9.0")

# SLURM's warning before a job's time limit (`--signal=USR1@…` in profiles/slurm) reaches every
# process of the job step, the Snakemake ones included. Those keep running (a no-op handler, so
# the commands they start still see the default disposition), and `roaming train` uses the lead
# time to write a checkpoint and exit; the resubmitted job resumes from it.
signal.signal(signal.SIGUSR1, lambda signum, frame: None)


configfile: "params.yaml"  # validated against workflow/schemas/ by roaming.grid


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    fixtures,


rule all:
    default_target: True
    input:
        all_targets(),



onsuccess:
    import atexit

    # Snakemake logs its log file and the elapsed time after this handler: print at exit, last.
    atexit.register(
        print,
        f"\nResults of preset {PLAN.preset}: {PLAN.reports_dir / grid.INDEX_FILE} (every table, "
        f"figure and claim on one page; per dataset: {PLAN.reports_dir}/<dataset>/).",
    )
