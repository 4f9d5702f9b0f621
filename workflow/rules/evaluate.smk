# Per cell: reconstruction BLEU, knowledge-overwriting QA (FaithEval, ConflictQA), semantic-drift QA (FineWeb,
# FaithEval), and rank truncation. One job loads the models once for all of them.


rule evaluate_cell:
    input:
        model=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final",
        fineweb=f"{OUT}/data/fineweb/eval.jsonl",
        faitheval=f"{OUT}/data/faitheval.jsonl",
        conflictqa=f"{OUT}/data/conflictqa.jsonl",
        sd_fineweb=f"{OUT}/questions/fineweb.jsonl",
        sd_faitheval=f"{OUT}/questions/faitheval.jsonl",
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        **{task: f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/{task}.json" for task in EVAL_TASKS},
        truncation=f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/rank_truncation.json",
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        f"{OUT}/logs/evaluate_cell/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate_cell/{{decoder}}/{{compressor}}/r{{ratio}}.tsv"
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    script:
        "../scripts/evaluate_cell.py"


rule rag_cell:
    """Downstream RAG on the MuSiQue sample with compressed passages (config: evaluate.rag.enabled)."""
    input:
        model=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final",
        musique=f"{OUT}/data/musique.jsonl",
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        summary=f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/rag_musique.json",
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        f"{OUT}/logs/rag_cell/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    script:
        "../scripts/rag_cell.py"
