# Inputs: the demo set, manifests (content-hashed file lists) and shard image stores.


rule demo_data:
    output:
        labeled=directory(f"{DEMO_DIR}/labeled"),
        batches=directory(f"{DEMO_DIR}/batches"),
    log:
        f"{RESULTS}/logs/demo_data.log",
    conda:
        "../envs/data.yaml"
    params:
        out=get_demo_root,
        demo=config["demo"],
    script:
        "../scripts/demo_data.py"


checkpoint manifest:
    input:
        get_manifest_input,
    output:
        f"{RESULTS}/{{coll}}/manifest.json",
    log:
        f"{RESULTS}/logs/manifest/{{coll}}.log",
    conda:
        "../envs/data.yaml"
    params:
        root=get_collection_dir,
        labeled=get_is_labeled,
        fingerprint=get_stat_fingerprint,
        shard_size=config["shard_size"],
    script:
        "../scripts/manifest.py"


rule decode_shard:
    input:
        manifest=ancient(f"{RESULTS}/{{coll}}/manifest.json"),
    output:
        f"{RESULTS}/{{coll}}/shards/{{shard}}.images.h5",
    log:
        f"{RESULTS}/logs/decode_shard/{{coll}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode_shard/{{coll}}/{{shard}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["decode"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        digest=get_shard_digest,
        sizes=IMAGE_SIZES,
        max_pixels=config["decode"]["max_pixels"],
        min_side=config["decode"]["min_side"],
    script:
        "../scripts/decode_shard.py"
