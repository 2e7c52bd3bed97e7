#!/usr/bin/env bash
# Run the whole test suite (unit, emulator contract, and real-mount end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
