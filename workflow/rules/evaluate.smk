# The final model of each run on each configured split → a flat metrics JSON in the run directory.
# Grouped with the run's training (train.smk): on a cluster the splits are evaluated side by side
# inside the training job, on its GPU if it has one, so each takes a share of its threads and
# memory and asks for no GPU of its own.


rule evaluate:
    input:
        model=str(PLAN.runs_dir / "{dataset}/{method}/{name}" / grid.MODEL_FILE),
        data=lambda wildcards: str(dataset_of(wildcards).processed),
    output:
        str(grid.metrics_path(PLAN.runs_dir / "{dataset}/{method}/{name}", "{split}")),
    params:
        run_dir=lambda wildcards: str(run_of(wildcards).dir),
        device=lambda wildcards: run_of(wildcards).protocol["device"],
    group:
        "run"
    threads: lambda wildcards: dataset_of(wildcards).evaluate_resources["threads"]
    resources:
        mem_mb=lambda wildcards: dataset_of(wildcards).evaluate_resources["mem_mb"],
        runtime=lambda wildcards: dataset_of(wildcards).evaluate_resources["runtime"],
        slurm_partition=slurm_partition,
    log:
        str(PLAN.logs_dir / "evaluate/{dataset}/{method}/{name}/{split}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/evaluate/{dataset}/{method}/{name}/{split}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming evaluate --run {params.run_dir} --data {input.data} --split {wildcards.split}"
        " --device {params.device} --out {output} > {log} 2>&1"
