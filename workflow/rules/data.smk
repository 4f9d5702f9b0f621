# Evaluation and training data, normalised to one record schema (see ctxcomp.data.records).


rule prepare_fineweb:
    input:
        family_tokenizer_inputs(),
        local_data_inputs(config["data"]["fineweb"]),
        chunk_tokenizer=chunk_tokenizer_inputs(),
    output:
        train=P.fineweb("train.jsonl"),
        eval=P.fineweb("eval.jsonl"),
        stats=P.fineweb("stats.json"),
    params:
        fineweb=config["data"]["fineweb"],
        tokenizer=chunk_tokenizer_param,
        families=family_tokenizers(),
        segment=config["segment"],
        seed=config["seed"],
    log:
        P.log("prepare_fineweb"),
    resources:
        **cpu_resources(mem_mb=16000, runtime=600),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_fineweb.py"


rule prepare_qa:
    input:
        lambda wc: local_data_inputs(config["data"][wc.qa]),
    output:
        records=P.qa("{qa}"),
        stats=P.qa_stats("{qa}"),
    params:
        source=lambda wc: C.data_params(config, wc.qa),  # data.<set>.min_records: read by the job
        seed=config["seed"],
    wildcard_constraints:
        qa="|".join(paths.QA_SETS),
    log:
        P.log("prepare_qa", "{qa}"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=60),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/prepare_qa.py"
