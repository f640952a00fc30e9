# Scoring: one job per (collection, shard, method, seed), each writing its own HDF5
# file (one writer per file), then one gather per collection.


rule score_shard:
    input:
        store=ancient(f"{RESULTS}/{{coll}}/shards/{{shard}}.images.h5"),
        model=f"{RESULTS}/models/{{method}}/seed{{seed}}/model.pt",
    output:
        temp(f"{RESULTS}/{{coll}}/shards/{{shard}}.{{method}}.seed{{seed}}.h5"),
    log:
        f"{RESULTS}/logs/score_shard/{{coll}}/{{shard}}.{{method}}.seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_shard/{{coll}}/{{shard}}.{{method}}.seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=SCORE_GPUS,
        mem_mb=8000,
        runtime=30,
    params:
        # what decides the output: the shard's content and how it is stored (the scoring batch
        # size, device and threads decide only how fast; scripts read them from the config)
        digest=get_shard_digest,
        hdf5=config["hdf5"],
    script:
        "../scripts/score_shard.py"


rule gather:
    input:
        unpack(get_gather_input),
    output:
        f"{RESULTS}/{{coll}}/scores.h5",
    log:
        f"{RESULTS}/logs/gather/{{coll}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather/{{coll}}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        digest=get_collection_digest,
        root=get_collection_dir,
        score_map=get_gather_score_map,
    script:
        "../scripts/gather.py"
