# Tiny preset only: tokenizers trained and base models pretrained by the pipeline on the shipped corpus.
# With hub models (config.yaml) no rule here is ever needed.


rule train_tokenizer:
    input:
        corpus=lambda wc: TINY["corpus"],
    output:
        directory(f"{OUT}/tiny/tokenizers/{{tok}}"),
    params:
        spec=lambda wc: TINY["tokenizers"][wc.tok],
    log:
        f"{OUT}/logs/train_tokenizer/{{tok}}.log",
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
        directory(f"{OUT}/base/{{model}}"),
    params:
        build=lambda wc: config["models"][wc.model]["build"],
        pretrain=lambda wc: TINY.get("pretrain", {}),
        seed=config["seed"],
    log:
        f"{OUT}/logs/pretrain_base/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/pretrain_base/{{model}}.tsv"
    threads: 1
    resources:
        **cpu_resources(mem_mb=2000, runtime=30),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/pretrain_base.py"
