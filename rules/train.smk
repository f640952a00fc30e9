# Training: one job per method and seed (wildcard run = <method>/seed<k>). Only runs listed in
# TRAINABLE match this rule: a model that does not exist yet, or one whose retraining this run
# allows (config `retrain`, `wormflow retrain`). An existing model is otherwise a plain input
# file, used as it is, so a change of the training data, config or code never stops or
# retrains a night: the ledger and the report say that retraining is pending, and why.


rule train:
    input:
        unpack(get_training_stores),
    output:
        model=f"{P.run_dir('{run}')}/model.pt",
        sidecar=f"{P.run_dir('{run}')}/model.json",
        history=f"{P.run_dir('{run}')}/history.csv",
        tensorboard=directory(f"{P.run_dir('{run}')}/tensorboard"),
    log:
        P.log("train", "{run}"),
    benchmark:
        P.benchmark("train", "{run}")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpus_for(config["training"]["device"]),
        mem_mb=scaled(16000),
        runtime=scaled(240),
    params:
        method=get_run_method,
        seed=get_run_seed,
        cfg=get_method_config,
        data=get_training_data_digest,
        code=get_training_code_digest,
    script:
        "../scripts/train.py"
