#!/usr/bin/env bash
# The comparison grid: each partition × {central, fdapt, ffdapt-paper, ffdapt-bottom}.
#
#   ./run_all.sh                                  # configs/default.yaml, the offline default
#   ./run_all.sh --config configs/ohsumed.yaml    # the real corpus
#   ./run_all.sh --partitions iid,by_key --set fl.rounds=3
#
# Each partition is one `bench compare` named <config name>-<partition>; a cell whose finished
# record has the same config is reused, and a killed cell is resumed, so the script can be run
# again after an interruption and only finishes what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
CONFIG=configs/default.yaml
PARTITIONS=iid,quantity,voc,len,by_key
METHODS=central,fdapt,ffdapt-paper,ffdapt-bottom
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --partitions) PARTITIONS="$2"; shift 2 ;;
    --methods) METHODS="$2"; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BASE=$("$PY" -m bench config --config "$CONFIG" "${EXTRA[@]}" | sed -n 's/^name: //p')
IFS=, read -r -a PARTS <<< "$PARTITIONS"
n=${#PARTS[@]}; i=0
for p in "${PARTS[@]}"; do
  i=$((i + 1))
  echo "== [$i/$n] partition $p: methods $METHODS (results/$BASE-$p/)"
  "$PY" -m bench compare --config "$CONFIG" --methods "$METHODS" "${EXTRA[@]}" \
    --set "name=$BASE-$p" --set "partition.method=$p"
done
echo "== done: $n partitions; tables in results/$BASE-*/compare.md"
