#!/usr/bin/env bash
# Set up a virtual environment in .venv with the project.
#
#   bash scripts/setup.sh          the core: every command on the default config
#   bash scripts/setup.sh all      the core and every extra the test suite uses
#                                  (test, minilm, deepspeed, flower, tracking)
#   bash scripts/setup.sh test,flower   the core and the extras named
#
# (EXTRAS="..." in the environment does the same as the argument.)
#
# torch is installed first, pinned by TORCH_SPEC (default torch==2.13.0, a CPU build where the
# machine offers one): an unpinned torch requirement would otherwise pull a CUDA build with
# several GB of packages onto a CPU-only machine. On a GPU machine set TORCH_SPEC to the CUDA
# build you want, e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index URL in PIP_EXTRA_INDEX_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${1:-${EXTRAS:-}}"
if [ "$EXTRAS" = "all" ]; then
  EXTRAS="test,minilm,deepspeed,flower,tracking"
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
if [ -n "$EXTRAS" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
