#!/usr/bin/env bash
# The GPU study in one command, on a machine that reaches no network: `.gpu/` (made here by
# `python scripts/gpu_study.py pack`) carried beside the tree. Installs the wheels it holds
# into a folder of its own, then runs `bench study --config configs/study-gpu.yaml` for a
# budget (default 450 s: one 8-minute call with the start and the packing) and leaves the
# records (no weights) and the log under $OUT; `gpu_study.py unpack` puts them in place here.
#
#   device run, carry [".gpu"]:  bash scripts/gpu_study.sh [--budget S] [--config F]
#
# Without CUDA it says so in one line and exits 0. The Python used: $PYTHON, else python3
# (a GPU image's own torch).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
    >/dev/null 2>&1; then
  echo "gpu_study: no CUDA device here (torch.cuda.is_available() is false): nothing to run"
  exit 0
fi
if [ ! -f .gpu/pack.json ]; then
  echo "gpu_study: .gpu/ is missing: run 'python scripts/gpu_study.py pack' here and carry .gpu"
  exit 2
fi
SITE=${TMPDIR:-/tmp}/fdapt-gpu-site
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .gpu/wheels/*.whl || exit 1
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PYTHON" scripts/gpu_study.py run "$@"
