# Tiny preset only: tokenizers trained and base models pretrained by the pipeline on the shipped corpus.
# With hub models (config.yaml) no rule here is ever needed.


rule train_tokenizer:
    input:
        corpus=lambda wc: TINY["corpus"],
    output:
        directory(P.tokenizer("{tok}")),
    params:
        spec=lambda wc: TINY["tokenizers"][wc.tok],
    log:
        P.log("train_tokenizer", "{tok}"),
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/train_tokenizer.py"


rule pretrain_base:
    input:
        corpus=lambda wc: TINY["corpus"],
        tokenizer=lambda wc: tokenizer_dir(wc.model),
    output:
        directory(P.base_model("{model}")),
    params:
        build=lambda wc: config["models"][wc.model]["build"],
        pretrain=lambda wc: TINY["pretrain"],
        seed=config["seed"],
    log:
        P.log("pretrain_base", "{model}"),
    benchmark:
        P.benchmark("pretrain_base", "{model}")
    threads: 1
    resources:
        **cpu_resources(mem_mb=2000, runtime=30),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/pretrain_base.py"
