#!/usr/bin/env bash
# Run scripts/bench.py; first install its peers (rclone, nginx) when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v rclone >/dev/null || missing+=(rclone)
command -v nginx >/dev/null || missing+=(nginx-light)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing benchmark peers: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "bench: rclone mount and nginx are the peers; without ${missing[*]} (sudo apt-get" \
             "install ${missing[*]}) only the scenarios that do not need them can run" >&2
    fi
fi
exec .venv/bin/python scripts/bench.py "$@"
