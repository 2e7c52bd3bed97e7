#!/usr/bin/env bash
# The emulator with sample containers, mounted at ./mnt (or $1); Ctrl-C unmounts and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/containerfs demo "${1:-mnt}"
