# One job per run of the grid. Only model.pt (written once, when training completes) is a declared
# output: Snakemake deletes declared outputs before it reruns a job, and the run directory's
# checkpoint.pt must survive an interrupted job so that the rerun resumes instead of restarting.
# `params.args` carries every training option, so a params.yaml edit reruns exactly the runs it
# changes; `roaming train` itself starts over when its configuration changed.


rule train:
    input:
        data=lambda wildcards: str(dataset_of(wildcards).processed),
    output:
        str(PLAN.runs_dir / "{dataset}/{method}/{name}" / grid.MODEL_FILE),
    params:
        run_dir=lambda wildcards: str(run_of(wildcards).dir),
        args=lambda wildcards: run_of(wildcards).shell_args(),
    threads: lambda wildcards: dataset_of(wildcards).resources["threads"]
    resources:
        gpu=lambda wildcards: dataset_of(wildcards).resources["gpu"],
        mem_mb=lambda wildcards: dataset_of(wildcards).resources["mem_mb"],
        runtime=lambda wildcards: dataset_of(wildcards).resources["runtime"],
    log:
        str(PLAN.logs_dir / "train/{dataset}/{method}/{name}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/train/{dataset}/{method}/{name}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming train --data {input.data} --out {params.run_dir} {params.args} --quiet"
        " > {log} 2>&1"
