# Evaluation on the labeled test split, the per-batch ledger and the HTML report.


rule evaluate:
    input:
        unpack(get_evaluate_input),
    output:
        json=f"{RESULTS}/eval/metrics.json",
        csv=f"{RESULTS}/eval/metrics.csv",
    log:
        f"{RESULTS}/logs/evaluate.log",
    conda:
        "../envs/report.yaml"
    params:
        seed_scores=get_seed_score_map,
        models=get_model_map,
        evaluation=config["evaluation"],
        published=config["report"]["published_f1"],
    script:
        "../scripts/evaluate.py"


rule ledger:
    input:
        batches=[batch_scores(b) for b in BATCHES],
        manifests=[manifest_path(f"batches/{b}") for b in BATCHES],
        models=get_primary_models,
    output:
        f"{RESULTS}/batches.tsv",
    log:
        f"{RESULTS}/logs/ledger.log",
    conda:
        "../envs/report.yaml"
    params:
        batches=BATCHES,
        rejected=REJECTED_BATCHES,
        methods=METHODS,
        benchmarks=f"{RESULTS}/benchmarks",
        drift=config["drift"],
    script:
        "../scripts/ledger.py"


rule report:
    input:
        unpack(get_report_input),
    output:
        html=f"{RESULTS}/report.html",
        json=f"{RESULTS}/report.json",
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/report.yaml"
    params:
        config=config,
        methods=METHODS,
        batches=BATCHES,
        rejected=REJECTED_BATCHES,
        benchmarks=f"{RESULTS}/benchmarks",
    script:
        "../scripts/report.py"
