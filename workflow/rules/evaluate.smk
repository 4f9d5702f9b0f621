# Per cell: reconstruction BLEU, knowledge-overwriting QA (FaithEval, ConflictQA), semantic-drift QA (FineWeb,
# FaithEval), rank truncation and, when evaluate.rag.enabled, downstream RAG on MuSiQue. One job loads the models once for all of them.


rule evaluate_cell:
    input:
        model=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final",
        fineweb=f"{OUT}/data/fineweb/eval.jsonl",
        faitheval=f"{OUT}/data/faitheval.jsonl",
        conflictqa=f"{OUT}/data/conflictqa.jsonl",
        sd_fineweb=f"{OUT}/questions/fineweb.jsonl",
        sd_faitheval=f"{OUT}/questions/faitheval.jsonl",
        **({"musique": f"{OUT}/data/musique.jsonl"} if RAG_ENABLED else {}),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        **{task: f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/{task}.json" for task in EVAL_TASKS},
        truncation=f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/rank_truncation.json",
        **({"rag": f"{OUT}/eval/{{decoder}}/{{compressor}}/r{{ratio}}/rag_musique.json"} if RAG_ENABLED else {}),
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        f"{OUT}/logs/evaluate_cell/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate_cell/{{decoder}}/{{compressor}}/r{{ratio}}.tsv"
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/evaluate_cell.py"

