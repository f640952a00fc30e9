# Inputs: the demo set, manifests (content-hashed file lists) and shard image stores.


rule demo_data:
    output:
        labeled=directory(f"{P.DEMO}/labeled"),
        batches=directory(f"{P.DEMO}/batches"),
    log:
        P.log("demo_data"),
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
        P.manifest("{coll}"),
    log:
        P.log("manifest", "{coll}"),
    conda:
        "../envs/data.yaml"
    params:
        root=get_collection_dir,
        labeled=get_is_labeled,
        fingerprint=get_stat_fingerprint,
        shard_size=config["shard_size"],
        fields=get_fields_config,
    script:
        "../scripts/manifest.py"


rule decode_shard:
    input:
        manifest=ancient(P.manifest("{coll}")),
    output:
        P.store("{coll}", "{shard}"),
    log:
        P.log("decode_shard", "{coll}", "{shard}"),
    benchmark:
        P.benchmark("decode_shard", "{coll}", "{shard}")
    conda:
        "../envs/data.yaml"
    threads: config["decode"]["threads"]
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(30),
    params:
        digest=get_shard_digest,
        sizes=IMAGE_SIZES,
        limits=get_decode_limits(),
        fields=get_fields_config,
        tiling=get_tiling_config,
    script:
        "../scripts/decode_shard.py"
