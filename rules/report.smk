# Evaluation on the labeled test split, the per-batch summaries and ledger, and the HTML report.


rule evaluate:
    input:
        unpack(get_evaluate_input),
    output:
        json=P.METRICS_JSON,
        csv=P.METRICS_CSV,
        gallery=P.GALLERY,
    log:
        P.log("evaluate"),
    conda:
        "../envs/report.yaml"
    params:
        models=get_evaluate_models,
        evaluation=config["evaluation"],
        published=config["report"]["published_f1"],
        gallery_size=config["report"]["gallery_size"],
    script:
        "../scripts/evaluate.py"


rule summarize:
    input:
        unpack(get_summarize_input),
    output:
        summary=P.summary("{batch}"),
        thumbnails=P.thumbnails("{batch}"),
    log:
        P.log("summarize", "{batch}"),
    conda:
        "../envs/report.yaml"
    params:
        models=primary_models(),
        drift=config["drift"],
        field_pattern=get_field_pattern,
        thumbnail_width=config["tiling"]["thumbnail_width"],
    script:
        "../scripts/summarize.py"


rule ledger:
    input:
        unpack(get_ledger_input),
    output:
        tsv=P.LEDGER_TSV,
        json=P.LEDGER_JSON,
    log:
        P.log("ledger"),
    conda:
        "../envs/report.yaml"
    params:
        rejected=REJECTED_BATCHES,
        deferred=DEFERRED_BATCHES,
        runs=get_training_runs,
        training=get_training_state,
        provisional=get_provisional,
        seal=get_seal_params(),
    script:
        "../scripts/ledger.py"


rule report:
    input:
        metrics=P.METRICS_JSON,
        gallery=P.GALLERY,
        ledger=P.LEDGER_JSON,
    output:
        html=P.REPORT_HTML,
        json=P.REPORT_JSON,
    log:
        P.log("report"),
    conda:
        "../envs/report.yaml"
    params:
        config=config,
        methods=METHODS,
    script:
        "../scripts/report.py"
