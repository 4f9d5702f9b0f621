# Config validation, the experiment matrix, wildcard constraints, resources and input functions.
# Rule files stay declarative; everything procedural lives here or in the ctxcomp package.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

_PKG_DIR = str(Path(workflow.basedir) / "workflow")
if _PKG_DIR not in sys.path:
    sys.path.insert(0, _PKG_DIR)

from ctxcomp import config as C  # noqa: E402
from ctxcomp import paths  # noqa: E402

# Scripts run in child processes (locally and inside Slurm jobs, conda envs too): they import the same package.
C.export_package_path()

# One line naming the key (not the validator's dump of the whole schema); fills in defaults, and reads `1e-3`
# (a string to YAML 1.1) as the number it is where the schema asks for a number.
try:
    C.validate_schema(config)
    C.check_references(config)
except C.ConfigError as exc:
    raise WorkflowError(str(exc)) from None

OUT = C.outdir(config)
P = paths.RunPaths(OUT)
MAIN_CELLS = C.main_cells(config)
ABLATION_CELLS = C.ablation_cells(config)
ALL_CELLS = C.all_cells(config)
DYNAMICS_CELL = C.dynamics_cell(config)
LORA_CONTROL_CELLS = C.lora_control_cells(config)
TINY = config.get("tiny") or {}
EVAL_TASKS = paths.EVAL_TASKS
QSETS = paths.QSETS
SLURM = config["slurm"]
RAG_ENABLED = config["evaluate"]["rag"]["enabled"]


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!x)x"


wildcard_constraints:
    model=_alternatives(config["models"]),
    decoder=_alternatives(config["models"]),
    compressor=_alternatives(config["models"]),
    ratio=r"\d+",
    tok=_alternatives(TINY.get("tokenizers", {})),
    qset="|".join(QSETS),


def cell_of(wildcards):
    return C.Cell(wildcards.decoder, wildcards.compressor, int(wildcards.ratio))


def cell_dir(stage, cell):
    return P.cell(stage, cell)


# ------------------------------------------------------------------------------------------------ model sources


def is_built(name):
    return "build" in config["models"][name]


def tokenizer_dir(name):
    """Tiny tokenizer directory that a built model uses."""
    return P.tokenizer(config["models"][name]["build"]["tokenizer"])


def model_inputs(*names):
    """Pipeline-made base models these rules need (none for hub models, which load by id)."""
    return [P.base_model(C.base_of(config, n)) for n in names if is_built(n)]  # twins share their base


def chunk_tokenizer_inputs():
    name = config["data"]["fineweb"].get("chunk_tokenizer") or config["decoder"]
    return [tokenizer_dir(name)] if is_built(name) else []


def chunk_tokenizer_source():
    name = config["data"]["fineweb"].get("chunk_tokenizer") or config["decoder"]
    return tokenizer_dir(name) if is_built(name) else config["models"][name]["hf_id"]


def chunk_tokenizer_param(wildcards, input):
    """The chunk tokenizer as the job sees it: the built tokenizer among its inputs (a path derived from the
    inputs, so that it holds on nodes without the shared filesystem too), else the hub id."""
    return input.chunk_tokenizer[0] if input.chunk_tokenizer else chunk_tokenizer_source()


# ----------------------------------------------------------------------------------------------------- resources


def _slurm_extras(res, gpu):
    out = {"slurm_partition": SLURM.get("gpu_partition" if gpu else "cpu_partition") or ("gpu" if gpu else "cpu")}
    if gpu and SLURM.get("gpu_model"):
        out["gpu_model"] = SLURM["gpu_model"]
    if SLURM.get("constraint"):
        out["constraint"] = SLURM["constraint"]
    if SLURM.get("account"):
        out["slurm_account"] = SLURM["account"]
    return out


def model_resources(kind):
    """Resources of a per-cell job, from the compressor's entry in config (`train_resources`/`eval_resources`).

    One node: `gpu: G` -> sbatch --gpus=G (--gpus=<gpu_model>:G with slurm.gpu_model). Several nodes (G GPUs on
    each): --gpus counts GPUs per job, so the request becomes `gres: gpu[:<model>]:G` (per node) with one task per
    node, and `mpi` makes the Slurm plugin run the job's Snakemake in the batch step, from where
    ctxcomp.train.launch starts torchrun on every node with srun. Keys whose value is None are left out.
    """

    def spec(wildcards):
        res = config["models"][wildcards.compressor][f"{kind}_resources"]
        gpu, nodes = res["gpu"], res["nodes"]
        out = {
            "mem_mb": res["mem_mb"],
            "runtime": res["runtime"],
            "cpus_per_task": res["cpus_per_task"],
            "nodes": nodes,
            **_slurm_extras(res, gpu),
        }
        if nodes <= 1:
            out["gpu"] = gpu
        else:
            model = out.pop("gpu_model", None)
            if gpu:
                out["gres"] = f"gpu:{model}:{gpu}" if model else f"gpu:{gpu}"
            out.update(mpi="srun", tasks=nodes, tasks_per_gpu=0)  # tasks_per_gpu=0: no --ntasks-per-gpu
        return out

    return {key: (lambda wc, key=key: spec(wc).get(key)) for key in _MODEL_RESOURCE_KEYS}


_MODEL_RESOURCE_KEYS = [
    "gpu",
    "gres",
    "mem_mb",
    "runtime",
    "cpus_per_task",
    "nodes",
    "tasks",
    "tasks_per_gpu",
    "mpi",
    "slurm_partition",
    "gpu_model",
    "constraint",
    "slurm_account",
]


def cpu_resources(mem_mb=4000, runtime=60):
    return {"mem_mb": mem_mb, "runtime": runtime, **_slurm_extras({}, 0)}


def model_threads(kind):
    return lambda wc: config["models"][wc.compressor][f"{kind}_resources"]["cpus_per_task"]


# ------------------------------------------------------------------------------------------------------- targets


def eval_outputs(cell):
    return [P.eval_task(task, cell) for task in EVAL_TASKS]


def main_report_outputs():
    return P.main_report_files(RAG_ENABLED)


def ablation_report_outputs():
    return P.ablation_report_files() if ABLATION_CELLS else []


def question_contexts(wildcards):
    return P.question_contexts(wildcards.qset)


def local_data_inputs(source):
    """The raw files a `data:` section reads from disk (source jsonl), so that editing one re-runs its rule; hub
    sources have none (their dataset id, name, split and revision are in the rule's params)."""
    if source["source"] == "hub":
        return []
    from ctxcomp.data.common import local_files

    try:
        files = local_files(source["path"])
    except FileNotFoundError:
        return [source["path"]]  # Snakemake reports it as the missing input of this rule
    root = Path(workflow.basedir).resolve()
    return [str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files]


def lora_control_outputs():
    """Target lora_control: each LoRA cell and its full-fine-tune twin (same ratio), and the comparison table."""
    cells = []
    for cell in LORA_CONTROL_CELLS:
        cells += [cell, C.Cell(cell.decoder, C.lora_twin(config, cell.compressor), cell.ratio)]
    return cell_results(list(dict.fromkeys(cells))) + P.lora_control_report_files()


def cell_results(cells):
    """Every per-cell file a report reads or indexes: summaries and their per-sample rows."""
    out = []
    for cell in cells:
        out += eval_outputs(cell)
        out += [paths.samples_of(f) for f in eval_outputs(cell)]
        out.append(P.eval("rank_truncation.json", cell))
        out.append(P.probes("probes.json", cell))
        out.append(P.probes("entropy.samples.jsonl", cell))
        out.append(P.train("loss.csv", cell))
        out.append(P.train("summary.json", cell))
        if RAG_ENABLED:
            out += [P.eval("rag_musique.json", cell), paths.samples_of(P.eval("rag_musique.json", cell))]
    return out


def report_dir(wildcards, output):
    """results/<run> from a report output path (report/<file>)."""
    return str(Path(output[0]).parent.parent)


# ----------------------------------------------------------------------------------------------- stop signals
# SIGTERM to Snakemake itself makes it finish the jobs it is running and start no more; Snakemake then reports "At
# least one job did not complete successfully" although nothing failed. Say what happened instead (exit 143 =
# 128 + SIGTERM); a job that really failed keeps Snakemake's own report.
_STOP_SIGNALS = []


onstart:
    import signal as _signal

    _scheduler_handler = _signal.getsignal(_signal.SIGTERM)

    def _note_stop(signum, frame):
        _STOP_SIGNALS.append(signum)
        if callable(_scheduler_handler):
            _scheduler_handler(signum, frame)

    _signal.signal(_signal.SIGTERM, _note_stop)


onerror:
    failed = getattr(getattr(workflow, "scheduler", None), "failed", None)
    if _STOP_SIGNALS and not failed:
        print(
            "Snakemake stopped on SIGTERM: the jobs that were running finished and their outputs are complete; "
            "no job failed. Jobs not yet started were left for the next run: run the same command again to "
            "continue.",
            file=sys.stderr,
        )
        raise SystemExit(143)


# ---------------------------------------------------------------- data (workflow/rules/data.smk)
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
