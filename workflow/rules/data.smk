# Evaluation and training data, normalised to one record schema (see ctxcomp.data.records).


rule prepare_fineweb:
    input:
        chunk_tokenizer_inputs(),
    output:
        train=f"{OUT}/data/fineweb/train.jsonl",
        eval=f"{OUT}/data/fineweb/eval.jsonl",
        stats=f"{OUT}/data/fineweb/stats.json",
    params:
        fineweb=config["data"]["fineweb"],
        tokenizer=chunk_tokenizer_source(),
        segment=config["segment"],
        seed=config["seed"],
    log:
        f"{OUT}/logs/prepare_fineweb.log",
    resources:
        **cpu_resources(mem_mb=16000, runtime=600),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_fineweb.py"


rule prepare_qa:
    output:
        records=f"{OUT}/data/{{qa}}.jsonl",
        stats=f"{OUT}/data/{{qa}}.stats.json",
    params:
        source=lambda wc: config["data"][wc.qa],
        seed=config["seed"],
    wildcard_constraints:
        qa="faitheval|conflictqa|musique",
    log:
        f"{OUT}/logs/prepare_qa/{{qa}}.log",
    resources:
        **cpu_resources(mem_mb=4000, runtime=60),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_qa.py"
