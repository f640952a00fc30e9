# Scoring: one job per (collection, shard) runs every model on the shard's image store (read
# once; the models share the device) and writes one score part per method and seed (reused when
# only another method changed), then one gather per collection.


rule score_shard:
    input:
        unpack(get_score_input),
    output:
        temp(P.score_index("{coll}", "{shard}")),
    log:
        P.log("score_shard", "{coll}", "{shard}"),
    benchmark:
        P.benchmark("score_shard", "{coll}", "{shard}")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpus_for(config["scoring"]["device"]),
        mem_mb=scaled(8000),
        runtime=scaled(30),
    params:
        # what decides the output: the shard's content, the models and how it is stored (the scoring
        # batch size, device and threads decide only how fast; scripts read them from the config)
        digest=get_shard_digest,
        models=get_score_models,
        tiling=config["tiling"],
        hdf5=config["hdf5"],
    script:
        "../scripts/score_shard.py"


rule gather:
    input:
        unpack(get_gather_input),
    output:
        P.scores("{coll}"),
    log:
        P.log("gather", "{coll}"),
    benchmark:
        P.benchmark("gather", "{coll}")
    conda:
        "../envs/data.yaml"
    params:
        digest=get_collection_digest,
        root=get_collection_dir,
        methods=METHODS,
    script:
        "../scripts/gather.py"
