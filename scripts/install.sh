#!/usr/bin/env bash
# Build .venv/ with containerfs and its test tools; make sure the system FUSE packages exist.
set -euo pipefail
cd "$(dirname "$0")/.."

# the FUSE packages the mount needs, then the tools the end-to-end tests drive
PKGS=(fuse3 libfuse3-dev pkg-config)
TOOLS=(rsync vim emacs-nox git curl)
missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}
mapfile -t need < <(missing "${PKGS[@]}")
mapfile -t tools < <(missing "${TOOLS[@]}")
if ((${#need[@]} + ${#tools[@]})) && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need[*]} ${tools[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" "${tools[@]}" >/dev/null
elif ((${#need[@]})); then
    echo "missing system packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
elif ((${#tools[@]})); then
    echo "the tests also drive: ${tools[*]} (run: sudo apt-get install ${tools[*]})" >&2
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,emulator]'
echo "containerfs installed in .venv/ (run: make demo, make test)"
