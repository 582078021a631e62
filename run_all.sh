#!/usr/bin/env bash
# The paper's grid from nothing, as a study: sets up .venv if it is missing, then
# `bench study` (every cell trained or reused, a killed run resumed, downstream, the report).
#
#   ./run_all.sh                # configs/study-paper.yaml: the study's set-up (a GPU)
#   ./run_all.sh --quick        # configs/study-quick.yaml: real text on 2 CPU cores, ~15 min
#   ./run_all.sh --quick --set fl.rounds=2 --device cpu    # anything else goes to bench study
#
# The grid (partitions, methods, seeds, tasks) lives in the study file; copy one to change it.
# Run it again after an interruption: it does only what is missing. The report lands in the
# study's out/report/.
set -euo pipefail
cd "$(dirname "$0")"
STUDY=configs/study-paper.yaml
case "${1:-}" in
  --quick) STUDY=configs/study-quick.yaml; shift ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;   # before the set-up: help installs nothing
esac
if [ ! -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then
  bash scripts/setup.sh minilm   # from nothing: the environment first (the MiniLM start)
fi
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
exec "${PYTHON:-.venv/bin/python}" -m bench study --config "$STUDY" "$@"
