# Raw data → one prepared HDF5 file per dataset. Synthetic fixtures are temporary: once the HDF5
# exists they are deleted, and a clone that pulled data/processed with DVC does not redo them.


rule fixtures:
    output:
        temp(directory(str(grid.FIXTURES_DIR / "{dataset}"))),
    params:
        options=lambda wildcards: dataset_of(wildcards).fixtures_args(),
    log:
        "logs/fixtures/{dataset}.log",
    benchmark:
        "logs/benchmarks/fixtures/{dataset}.tsv"
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming fixtures {wildcards.dataset} --out {output} {params.options} > {log} 2>&1"


rule prepare:
    input:
        raw=lambda wildcards: str(dataset_of(wildcards).raw),
    output:
        str(grid.PROCESSED_DIR / "{dataset}.h5"),
    params:
        options=lambda wildcards: dataset_of(wildcards).prepare_args(),
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming prepare {wildcards.dataset} --raw {input.raw} --out {output}"
        " {params.options} --quiet > {log} 2>&1"
