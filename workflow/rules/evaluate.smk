# Per cell: reconstruction BLEU, knowledge-overwriting QA (FaithEval, ConflictQA), semantic-drift QA (FineWeb,
# FaithEval), rank truncation, when evaluate.rag.enabled downstream RAG on MuSiQue, and the probes of the memory
# (effective rank of Z, the decoder's teacher-forced entropy: probes/<cell>/). One job per cell loads the models once
# for all of them: a cell's results depend on that cell's model and settings only.


rule evaluate_cell:
    input:
        **({"musique": P.qa("musique")} if RAG_ENABLED else {}),
        model=P.train("final"),
        fineweb=P.fineweb("eval.jsonl"),
        faitheval=P.qa("faitheval"),
        conflictqa=P.qa("conflictqa"),
        sd_fineweb=P.questions("fineweb"),
        sd_faitheval=P.questions("faitheval"),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        **{task: P.eval_task(task) for task in EVAL_TASKS},
        **{f"{task}_samples": paths.samples_of(P.eval_task(task)) for task in EVAL_TASKS},
        **({"rag": P.eval("rag_musique.json")} if RAG_ENABLED else {}),
        **({"rag_samples": paths.samples_of(P.eval("rag_musique.json"))} if RAG_ENABLED else {}),
        truncation=P.eval("rank_truncation.json"),
        probes=P.probes("probes.json"),
        probes_samples=P.probes("entropy.samples.jsonl"),
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        P.log("evaluate_cell", None),
    benchmark:
        P.benchmark("evaluate_cell", None)
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/evaluate_cell.py"
