# Semantic-drift questions: DeepSeek-R1 (or any OpenAI-compatible endpoint), or the offline backend.


rule generate_questions:
    input:
        contexts=question_contexts,
    output:
        questions=P.questions("{qset}"),
        report=P.question_report("{qset}"),
    params:
        questions=C.question_params(config),  # what determines the questions; runtime keys: read by the job
        n_contexts=lambda wc: config["questions"].get("contexts", {}).get(wc.qset, 0),
        cache_dir=P.question_cache,
    log:
        P.log("generate_questions", "{qset}"),
    benchmark:
        P.benchmark("generate_questions", "{qset}")
    resources:
        **cpu_resources(mem_mb=4000, runtime=720),
    conda:
        "../../envs/questions.yaml"
    script:
        "../scripts/generate_questions.py"
