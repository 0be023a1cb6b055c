# Per dataset: the results table (CSV + Markdown, mean ± std over seeds), a folder with one
# metrics JSON per run (what `dvc metrics show` lists) and the figure "metric vs sharing ratio,
# MR vs TR". The
# report module is an input so that editing it redoes the (cheap) report, not the training.
REPORT_FILES = grid.report_files(PLAN.reports_dir / "{dataset}")


rule report:
    input:
        metrics=report_inputs,
        code="src/roaming/report.py",
    output:
        csv=report(
            str(REPORT_FILES["csv"]),
            category="Results",
            subcategory="{dataset}",
            caption="../report/results.rst",
        ),
        markdown=str(REPORT_FILES["markdown"]),
        metrics=directory(str(REPORT_FILES["metrics"])),
        figure=report(
            str(REPORT_FILES["figure"]),
            category="Figures",
            subcategory="{dataset}",
            caption="../report/sharing.rst",
        ),
    params:
        run_dirs=report_run_dirs,
        out=lambda wildcards: str(dataset_of(wildcards).report_dir),
        metric=lambda wildcards: dataset_of(wildcards).metric,
    log:
        str(PLAN.logs_dir / "report/{dataset}.log"),
    benchmark:
        str(PLAN.logs_dir / "benchmarks/report/{dataset}.tsv")
    conda:
        "../envs/roaming.yaml"
    shell:
        "roaming report {params.run_dirs} --out {params.out} --metric {params.metric}"
        " > {log} 2>&1"
