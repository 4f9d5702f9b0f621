#!/usr/bin/env bash
# Run a command inside the project's virtual environment (.venv), creating or updating it first when needed.
#   bash workflow/venv.sh snakemake --profile profiles/tiny paper
#   bash workflow/venv.sh pytest
# torch is installed first and pinned (TORCH_SPEC, default torch==2.13.0): an unpinned torch, asked for by
# deepspeed or accelerate, would pull gigabytes of CUDA wheels onto a CPU machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CTXCOMP_VENV:-$root/.venv}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
stamp=$venv/.ctxcomp-installed
want="$torch_spec $(cat "$root/envs/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[venv] installing the environment into $venv (first run: about 2 minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$torch_spec"
  constraints=$(mktemp)
  "$venv/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" >"$constraints"
  "$venv/bin/python" -m pip install -q -c "$constraints" -r "$root/envs/requirements.txt"
  "$venv/bin/python" -m pip install -q --no-deps -e "$root"
  rm -f "$constraints"
  echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} TOKENIZERS_PARALLELISM=false
cd "$root"
exec "$@"
