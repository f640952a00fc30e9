# Training: one rule per method (one job per seed). A model is retrained only when
# its training data (content digest), its config section or the package code it
# depends on changes; a new batch never retrains.


rule train_vae:
    input:
        unpack(get_training_stores),
    output:
        model=protected(f"{RESULTS}/models/vae/seed{{seed}}/model.pt"),
        history=f"{RESULTS}/models/vae/seed{{seed}}/history.csv",
        tensorboard=directory(f"{RESULTS}/models/vae/seed{{seed}}/tensorboard"),
    log:
        f"{RESULTS}/logs/train/vae/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/vae/seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=16000,
        runtime=240,
    params:
        method="vae",
        cfg=config["methods"]["vae"],
        data=get_training_data_digest,
        code=CODE_DIGEST,
    script:
        "../scripts/train.py"


use rule train_vae as train_gan with:
    output:
        model=protected(f"{RESULTS}/models/gan/seed{{seed}}/model.pt"),
        history=f"{RESULTS}/models/gan/seed{{seed}}/history.csv",
        tensorboard=directory(f"{RESULTS}/models/gan/seed{{seed}}/tensorboard"),
    log:
        f"{RESULTS}/logs/train/gan/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/gan/seed{{seed}}.tsv"
    params:
        method="gan",
        cfg=config["methods"]["gan"],
        data=get_training_data_digest,
        code=CODE_DIGEST,


use rule train_vae as train_resnet50 with:
    output:
        model=protected(f"{RESULTS}/models/resnet50/seed{{seed}}/model.pt"),
        history=f"{RESULTS}/models/resnet50/seed{{seed}}/history.csv",
        tensorboard=directory(f"{RESULTS}/models/resnet50/seed{{seed}}/tensorboard"),
    log:
        f"{RESULTS}/logs/train/resnet50/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/resnet50/seed{{seed}}.tsv"
    params:
        method="resnet50",
        cfg=config["methods"]["resnet50"],
        data=get_training_data_digest,
        code=CODE_DIGEST,
