#!/usr/bin/env bash
# Runs `streaminfer demo --drift`'s test several times in a row and tallies how many windows
# drifted each time (4 of 8 expected: the four after the shift; 5 when rows produced in the
# shift's millisecond land in the window before it):
#   bash tests/benchmarks/demo_drift_loop.sh [RUNS]   -> tests/benchmarks/results/demo_drift_loop.md
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
out=tests/benchmarks/results/demo_drift_loop.md
test="tests/integration/test_cli.py::test_demo_with_drift_answers_every_request_and_shows_drift_on_exactly_the_shifted_features"
{
  echo "# \`demo --drift\`, $runs runs in a row"
  echo
  echo "\`bash tests/benchmarks/demo_drift_loop.sh $runs\` on $(date -u +%Y-%m-%d), $(nproc) cores."
  echo
  echo "| run | result | windows drifted | seconds | load at start |"
  echo "|---|---|---|---|---|"
} > "$out"
for run in $(seq 1 "$runs"); do
  load=$(cut -d ' ' -f 1 /proc/loadavg)
  started=$(date +%s)
  log=$(mktemp)
  python -m pytest -q -s -rf -p no:cacheprovider "$test" > "$log" 2>&1
  summary=$(tail -1 "$log")
  drifted=$(grep -o "windows drifted [0-9]*/[0-9]*" "$log" | tail -1 | cut -d ' ' -f 3)
  echo "| $run | $summary | ${drifted:-see log} | $(( $(date +%s) - started )) | $load |" >> "$out"
  echo "run $run: $summary ${drifted:-}"
  grep -q "failed" <<< "$summary" && cp "$log" "${out%.md}_failure_$run.log"
done
