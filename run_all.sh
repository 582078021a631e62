#!/usr/bin/env bash
# The paper grid, end to end: partitions × methods × seeds, then downstream, then the report.
#
#   ./run_all.sh --quick                  # the real corpus on 2 CPU cores, ~15 min (configs/quick.yaml)
#   ./run_all.sh                          # configs/paper.yaml, the study's set-up (a GPU)
#   ./run_all.sh --quick --downstream     # quick, with the downstream stage (hours on 2 cores)
#   ./run_all.sh --config configs/default.yaml --seeds 0,1 --partitions iid,by_key
#
# Options: --config FILE, --partitions a,b,…, --methods a,b,…, --seeds 0,1,…, --tasks a,b,…,
# --set key=value (repeatable), --no-downstream / --downstream, --name NAME (the report's
# folder name). --quick skips the downstream stage unless --downstream is given: fine-tuning
# all-MiniLM-L6-v2 on one task's quick subset takes about 4 minutes on 2 CPU cores, so the
# stage would take hours there; the report then compares held-out MLM loss instead.
# Each (partition, seed) is one `bench compare` named <name>-<partition>-s<seed>; a finished
# cell whose record has the same config is reused and a killed one is resumed, so running the
# script again after an interruption only does what is missing. The report lands in
# results/<name>/report/.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then
  bash scripts/setup.sh   # from nothing: the environment first
fi
PY="${PYTHON:-.venv/bin/python}"
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
CONFIG=configs/paper.yaml
PARTITIONS=iid,quantity,voc,len,by_key
METHODS=central,fdapt,ffdapt-paper,ffdapt-bottom,ffdapt-budget,ffdapt-progressive
SEEDS=0,1,2
TASKS=ncbi_disease,chemprot,pubmedqa
DOWNSTREAM=1
QUICK=
NAME=
USER_CONFIG=; USER_METHODS=; USER_SEEDS=; DS_FLAG=
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --downstream) DS_FLAG=1; shift ;;
    --no-downstream) DS_FLAG=0; shift ;;
    --config) USER_CONFIG="$2"; shift 2 ;;
    --partitions) PARTITIONS="$2"; shift 2 ;;
    --methods) USER_METHODS="$2"; shift 2 ;;
    --seeds) USER_SEEDS="$2"; shift 2 ;;
    --tasks) TASKS="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$QUICK" ]; then  # quick defaults; what was given explicitly wins
  CONFIG=configs/quick.yaml; SEEDS=0; DOWNSTREAM=
  METHODS=central,fdapt,ffdapt-paper,ffdapt-budget,ffdapt-progressive
fi
CONFIG="${USER_CONFIG:-$CONFIG}"; METHODS="${USER_METHODS:-$METHODS}"; SEEDS="${USER_SEEDS:-$SEEDS}"
case "${DS_FLAG:-}" in 1) DOWNSTREAM=1 ;; 0) DOWNSTREAM= ;; esac
# the config (and every --set) is checked once, before the first cell trains
BASE=$("$PY" -m bench config --config "$CONFIG" "${EXTRA[@]}" | sed -n 's/^name: //p')
NAME="${NAME:-$BASE}"
IFS=, read -r -a PARTS <<< "$PARTITIONS"
IFS=, read -r -a SEEDLIST <<< "$SEEDS"
n=$(( ${#PARTS[@]} * ${#SEEDLIST[@]} )); i=0
FOLDERS=()
start=$(date +%s)
for seed in "${SEEDLIST[@]}"; do
  for p in "${PARTS[@]}"; do
    i=$((i + 1))
    cell="$NAME-$p-s$seed"
    echo "== [$i/$n] $cell: partition $p, seed $seed, methods $METHODS ($(( $(date +%s) - start )) s so far)"
    "$PY" -m bench compare --config "$CONFIG" --methods "$METHODS" "${EXTRA[@]}" \
      --set "name=$cell" --set "partition.method=$p" --set "seed=$seed"
    FOLDERS+=("results/$cell")
  done
done
RUNS=$(IFS=,; echo "${FOLDERS[*]}")
if [ -n "$DOWNSTREAM" ]; then
  echo "== downstream: $TASKS on every model of $n comparisons ($(( $(date +%s) - start )) s so far)"
  "$PY" -m bench downstream --runs "$RUNS" --tasks "$TASKS" ${QUICK:+--quick}
fi
echo "== report ($(( $(date +%s) - start )) s so far)"
"$PY" -m bench report --runs "$RUNS" --out "results/$NAME/report"
echo "== done in $(( $(date +%s) - start )) s: results/$NAME/report/report.md"
