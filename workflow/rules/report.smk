# Per dataset, `roaming report` writes the paper's tables (Δm against the grid's own STL runs),
# every Figure 1 panel whose sweep is in the grid, the training curves, one MR run's masks, the
# claims checked, a self-contained report.html, summary.json (what `dvc metrics show` lists),
# curves/ (what `dvc plots` draws) and metrics/ (one JSON per run) into
# reports/<preset>/<dataset>/; `roaming index` then joins the datasets into
# reports/<preset>/index.html. Which panels a dataset has depends on its grid, and a rule's
# outputs are fixed, so each dataset has its own rule, report_<dataset>, with exactly the files
# roaming.grid lists for it. The report package is an input, so editing it redoes the (cheap)
# reports, not the training.
REPORT_CODE = sorted(str(path) for path in Path("src/roaming/report").glob("*.py"))

for _data in PLAN.datasets.values():

    rule:
        name:
            f"report_{_data.name}"
        localrule: True
        input:
            metrics=[str(run.metrics[REPORT_SPLIT]) for run in _data.runs],
            code=REPORT_CODE,
        output:
            **report_outputs(_data),
        params:
            run_dirs=shlex.join(str(run.dir) for run in _data.runs),
            out=lambda wildcards, output: str(Path(output.table).parent),
            options=_data.report_args(),
            dataset=_data.name,
            synthetic=_data.synthetic,
        log:
            str(PLAN.logs_dir / f"report/{_data.name}.log"),
        benchmark:
            str(PLAN.logs_dir / f"benchmarks/report/{_data.name}.tsv")
        conda:
            "../envs/roaming.yaml"
        shell:
            "roaming report {params.run_dirs} --out {params.out} {params.options} > {log} 2>&1"


rule index:
    localrule: True
    input:
        pages=[str(data.report_files["page"]) for data in PLAN.datasets.values()],
        summaries=[str(data.report_files["summary"]) for data in PLAN.datasets.values()],
        code=REPORT_CODE,
    output:
        page=report(
            str(PLAN.reports_dir / grid.INDEX_FILE),
            category="Overview",
            caption="../report/index.rst",
        ),
        summary=str(PLAN.reports_dir / grid.SUMMARY_FILE),
    params:
        report_dirs=shlex.join(str(data.report_dir) for data in PLAN.datasets.values()),
        preset=PLAN.preset,
        synthetic=any(data.synthetic for data in PLAN.datasets.values()),
    log:
        str(PLAN.logs_dir / "report/index.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/report/index.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming index {params.report_dirs} --out {output.page} --summary {output.summary} "
        "--preset {params.preset} > {log} 2>&1"
