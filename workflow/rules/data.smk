# Raw data → one prepared HDF5 file per dataset. Synthetic fixtures are temporary: once the HDF5
# exists they are deleted, and a clone that pulled data/processed with DVC does not redo them.


rule fixtures:
    output:
        temp(directory(str(PLAN.fixtures_dir / "{dataset}"))),
    params:
        options=lambda wildcards: dataset_of(wildcards).fixtures_args(),
    log:
        str(PLAN.logs_dir / "fixtures/{dataset}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/fixtures/{dataset}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming fixtures {wildcards.dataset} --out {output} {params.options} > {log} 2>&1"


rule prepare:
    input:
        raw=lambda wildcards: str(dataset_of(wildcards).raw),
    output:
        str(PLAN.processed_dir / "{dataset}.h5"),
    params:
        options=lambda wildcards: dataset_of(wildcards).prepare_args(),
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    log:
        str(PLAN.logs_dir / "prepare/{dataset}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/prepare/{dataset}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming prepare {wildcards.dataset} --raw {input.raw} --out {output}"
        " {params.options} --quiet > {log} 2>&1"
