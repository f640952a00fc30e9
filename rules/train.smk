# Training: one job per method and seed. A model is retrained only when its training data
# (content digest), its config section or the package code it depends on changes; a new batch
# never retrains.


rule train:
    input:
        unpack(get_training_stores),
    output:
        model=protected(P.model("{method}", "{seed}")),
        sidecar=P.model_sidecar("{method}", "{seed}"),
        history=P.history("{method}", "{seed}"),
        tensorboard=directory(P.tensorboard("{method}", "{seed}")),
    log:
        P.log("train", "{method}", "seed{seed}"),
    benchmark:
        P.benchmark("train", "{method}", "seed{seed}")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpus_for(config["training"]["device"]),
        mem_mb=scaled(16000),
        runtime=scaled(240),
    params:
        cfg=get_method_config,
        data=get_training_data_digest,
        code=get_training_code_digest,
    script:
        "../scripts/train.py"
