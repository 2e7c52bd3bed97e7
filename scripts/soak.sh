#!/usr/bin/env bash
# The model test's long run (make soak): both drivers of tests/test_model.py with many more and
# longer random runs, then the totals: operations, faults injected, and files lost, duplicated
# or corrupted on the server after the final drain (all must be 0). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
CONTAINERFS_SOAK=1 CONTAINERFS_SOAK_REPORT="$report" .venv/bin/python -m pytest -q \
    -p no:cacheprovider tests/test_model.py -k "agree" "$@" || status=$?
.venv/bin/python - "$report" <<'PY'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = ["operations", "faults_injected", "remounts", "out_of_band",
        "lost", "duplicated", "corrupted", "unexpected"]
print(f"\n{'soak':<14}" + "".join(f"{k:>16}" for k in keys))
for row in rows:
    print(f"{row['driver']:<14}" + "".join(f"{row[k]:>16}" for k in keys))
print(f"{'total':<14}" + "".join(f"{sum(r[k] for r in rows):>16}" for k in keys))
PY
exit "$status"
