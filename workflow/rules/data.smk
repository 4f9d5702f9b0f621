# Evaluation and training data, normalised to one record schema (see ctxcomp.data.records).


def family_tokenizers():
    """{model family: tokenizer source} of every compressor and decoder: FineWeb windows must hold L tokens of each."""
    abl = config.get("ablation") or {}
    names = [*config["compressors"], config["decoder"], *abl.get("compressors", []), *abl.get("decoders", [])]
    out = {}
    for n in names:
        out.setdefault(config["models"][n]["family"], tokenizer_dir(n) if is_built(n) else config["models"][n]["hf_id"])
    return out


def family_tokenizer_inputs():
    return sorted({src for src in family_tokenizers().values() if src.startswith(P.root)})


rule prepare_fineweb:
    input:
        family_tokenizer_inputs(),
        chunk_tokenizer_inputs(),
        local_data_inputs(config["data"]["fineweb"]),
    output:
        train=P.fineweb("train.jsonl"),
        eval=P.fineweb("eval.jsonl"),
        stats=P.fineweb("stats.json"),
    params:
        fineweb=config["data"]["fineweb"],
        tokenizer=chunk_tokenizer_source(),
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
