#!/usr/bin/env bash
# The GPU check in one command: the step bench (the study's encoder step with each lever added in
# turn, batch 64, the Llama-shape decoder, the freeze policies' FLOP vs wall-time savings; MFU,
# tokens/s, the spread of repeats, GPU memory), then the `gpu`-marked tests (a sequential bf16
# run end to end, MFU of the harness loop against the datasheet peak, eager vs torch.compile,
# the NCCL executor and ZeRO bf16 on one GPU) and `bench perf` at GPU sizes, on one GPU, in
# under 8 minutes. Writes
# one JSON under results/ (default results/gpu-check-<time>.json; --out FILE) and the perf
# record beside it (perf-gpu.json), which is what results/baselines/perf-gpu.json is made from.
#
# Without CUDA it says so in one line and exits 0. The Python used: $PYTHON, else .venv's, else
# python3 (a GPU image's own torch); the project is imported from this folder, so on a machine
# that cannot install, only its missing dependencies need bringing (datasets, deepspeed, …).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
    >/dev/null 2>&1; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is false): nothing to check"
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PYTHON" scripts/gpu_check.py "$@"
