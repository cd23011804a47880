#!/usr/bin/env bash
# The GPU path end to end on one NVIDIA GPU with no network, in under 8 minutes (bench/gpu_check.py says what
# it runs; docs/gpu.md how to carry the packages a bare GPU machine lacks). One table at the end.
#   bench/gpu_check.sh [--deps DIR] [--work DIR] [--adapters N] [--device cpu]
# --deps DIR: a folder of packages (pip install --target DIR ...) put on PYTHONPATH, for Ray workers too.
# Without a CUDA device it exits 2 with one line (unless --device cpu: a toy-size check of the script itself).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deps=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deps) deps="$(cd "$2" && pwd)"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$root${deps:+:$deps}${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
unset DS_ACCELERATOR  # the Makefile's CPU default; gpu_check.py sets it per --device
exec "$python" "$root/bench/gpu_check.py" ${args[@]+"${args[@]}"}
