#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check containerfs tests scripts
.venv/bin/ruff format --check containerfs tests scripts
.venv/bin/mypy
