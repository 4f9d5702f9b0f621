# Semantic-drift questions: DeepSeek-R1 (or any OpenAI-compatible endpoint), or the offline backend.


rule generate_questions:
    input:
        contexts=question_contexts,
    output:
        questions=f"{OUT}/questions/{{qset}}.jsonl",
        report=f"{OUT}/questions/{{qset}}.report.json",
    params:
        questions=lambda wc: {k: v for k, v in config["questions"].items() if k != "contexts"},
        n_contexts=lambda wc: config["questions"].get("contexts", {}).get(wc.qset, 0),
        cache_dir=f"{OUT}/questions/cache",
    log:
        f"{OUT}/logs/generate_questions/{{qset}}.log",
    benchmark:
        f"{OUT}/benchmarks/generate_questions/{{qset}}.tsv"
    resources:
        **cpu_resources(mem_mb=4000, runtime=720),
    conda:
        "../../envs/questions.yaml"
    script:
        "../scripts/generate_questions.py"
