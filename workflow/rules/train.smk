# One job per run of the grid. Only model.pt (written once, when training completes) is a declared
# output: Snakemake deletes declared outputs before it reruns a job, and the run directory's
# checkpoint.pt must survive an interrupted job so that the rerun resumes instead of restarting.
# `params.args` carries every training option, so a params.yaml edit reruns exactly the runs it
# changes; `roaming train` itself starts over when its configuration changed.
# On a cluster a run's training and evaluations are one job (group "run"): one submission, one
# Snakemake start-up, and the evaluations use the training's allocation (and GPU).


rule train:
    input:
        data=lambda wildcards: str(dataset_of(wildcards).processed),
    output:
        str(PLAN.runs_dir / "{dataset}/{method}/{name}" / grid.MODEL_FILE),
    params:
        run_dir=lambda wildcards: str(run_of(wildcards).dir),
        args=lambda wildcards: run_of(wildcards).shell_args(),
    group:
        "run"
    threads: lambda wildcards: dataset_of(wildcards).resources["threads"]
    resources:
        gpu=lambda wildcards: dataset_of(wildcards).resources["gpu"],
        gpu_shares=gpu_shares,
        mem_mb=lambda wildcards: dataset_of(wildcards).resources["mem_mb"],
        runtime=lambda wildcards: dataset_of(wildcards).resources["runtime"],
        slurm_partition=slurm_partition,
    log:
        str(PLAN.logs_dir / "train/{dataset}/{method}/{name}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/train/{dataset}/{method}/{name}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:  # exec: SLURM's signals reach `roaming train` itself, not a shell around it
        "exec roaming train --data {input.data} --out {params.run_dir} {params.args} --quiet"
        " > {log} 2>&1"
