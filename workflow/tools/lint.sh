#!/usr/bin/env bash
# Static checks of the repository; exits non-zero when any of them finds something.
#   bash workflow/venv.sh bash workflow/tools/lint.sh
#   1. ruff check        the Python code ([tool.ruff] in pyproject.toml)
#   2. snakefmt --check  the Snakefile and the rule files ([tool.snakefmt])
#   3. snakemake --lint  the workflow with config.yaml, and with the tiny preset on top
# Every check runs even when an earlier one fails, so that one pass shows everything.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
failed=()

check() {
  local name=$1
  shift
  echo "[lint] $name: $*" >&2
  if ! "$@"; then failed+=("$name"); fi
}

check ruff ruff check .
check snakefmt snakefmt --check Snakefile workflow/rules
check "snakemake --lint (config.yaml)" snakemake --lint --nolock
check "snakemake --lint (tiny preset)" snakemake --lint --nolock --configfile config.yaml workflow/presets/tiny.yaml

if [ ${#failed[@]} -gt 0 ]; then
  (IFS=,; echo "[lint] failed:${failed[*]/#/ }" >&2)
  exit 1
fi
echo "[lint] all checks passed" >&2
