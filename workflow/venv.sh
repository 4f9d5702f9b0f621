#!/usr/bin/env bash
# Run a command inside the project's virtual environment (.venv), creating it first when needed.
#   bash workflow/venv.sh snakemake --profile tiny paper
#   bash workflow/venv.sh pytest
# The environment is exactly the lock envs/requirements.lock.txt (CPU build of torch), or with CTXCOMP_TORCH=cuda
# envs/requirements-cuda.lock.txt (PyPI's CUDA build), plus this package (editable). Regenerate the locks with
# workflow/tools/lock.py. When the lock changes, the venv is rebuilt from scratch, so that nothing outside the lock
# stays behind. CTXCOMP_VENV: another venv directory; CTXCOMP_PYTHON: the interpreter (default python3.11);
# CTXCOMP_NO_INSTALL=1: fail instead of installing when the venv is missing or not that of the lock.
# The command also sees profiles/xdg first in XDG_CONFIG_DIRS: `--profile slurm` is profiles/slurm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CTXCOMP_VENV:-$root/.venv}
case ${CTXCOMP_TORCH:-cpu} in
  cpu) lock=$root/envs/requirements.lock.txt ;;
  cuda) lock=$root/envs/requirements-cuda.lock.txt ;;
  *) echo "[venv] CTXCOMP_TORCH must be cpu or cuda, not '$CTXCOMP_TORCH'" >&2; exit 2 ;;
esac
stamp=$venv/.ctxcomp-installed
want="$(basename "$lock") $(sha256sum <"$lock" | cut -c1-16)"

install() {
  local python=${CTXCOMP_PYTHON:-$(command -v python3.11 || command -v python3)}
  local version
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$version" != 3.11 ]; then
    echo "[venv] warning: the lock is for Python 3.11, $python is $version (set CTXCOMP_PYTHON)" >&2
  fi
  echo "[venv] installing $(basename "$lock") into $venv (first run: about 2 minutes)" >&2
  rm -f "$stamp"
  "$python" -m venv --clear "$venv"
  # pip itself first, at the locked version; then every locked package without resolving anything (--no-deps):
  # the lock is complete, and `pip check` proves it.
  "$venv/bin/python" -m pip install -q "$(grep -E '^pip==' "$lock")"
  "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root"
  "$venv/bin/python" -m pip check >&2
  if [ "$venv" = "$root/.venv" ]; then
    # This checkout's own venv: `source .venv/bin/activate` gives the bare profile names too.
    cat >>"$venv/bin/activate" <<EOF

# ctxcomp (workflow/venv.sh): bare Snakemake profile names (--profile slurm) are this checkout's profiles/<name>
export XDG_CONFIG_DIRS="$root/profiles/xdg:\${XDG_CONFIG_DIRS:-/etc/xdg}"
EOF
  fi
  echo "$want" >"$stamp"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ "${CTXCOMP_NO_INSTALL:-0}" = 1 ]; then
    echo "[venv] $venv is not installed from $(basename "$lock") (CTXCOMP_NO_INSTALL=1):" \
      "run bash workflow/venv.sh true" >&2
    exit 3
  fi
  mkdir -p "$(dirname "$venv")"
  # Two commands started at once on a fresh clone: the second waits for the first's install. The lock is taken on
  # the venv's parent directory, which outlives `venv --clear`.
  exec 9<"$(dirname "$venv")"
  flock 9
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then install; fi
  exec 9>&-
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
export XDG_CONFIG_DIRS="$root/profiles/xdg:${XDG_CONFIG_DIRS:-/etc/xdg}"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} TOKENIZERS_PARALLELISM=false
cd "$root"
exec "$@"
