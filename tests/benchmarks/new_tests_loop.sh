#!/usr/bin/env bash
# Runs the newest integration tests (anomaly alerts, audit report, autoscaling on one and two nodes,
# the bench command) several times in a row and tallies each run, so a rare failure shows early:
#   bash tests/benchmarks/new_tests_loop.sh [RUNS] [OUT]   -> OUT (tests/benchmarks/results/new_tests_loop.md)
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
tests=(tests/integration/test_alert_anomaly.py tests/integration/test_audit_after_a_session.py
       tests/integration/test_autoscaling.py tests/integration/test_autoscaling_cluster.py
       tests/integration/test_bench_command.py)
out=${2:-tests/benchmarks/results/new_tests_loop.md}
{
  echo "# The newest integration tests, $runs runs in a row"
  echo
  echo "\`bash tests/benchmarks/new_tests_loop.sh $runs $out\` on $(date -u +%Y-%m-%d), $(nproc) cores."
  echo
  echo "| run | result | seconds | load at start |"
  echo "|---|---|---|---|"
} > "$out"
for run in $(seq 1 "$runs"); do
  load=$(cut -d ' ' -f 1 /proc/loadavg)
  started=$(date +%s)
  log=$(mktemp)
  python -m pytest -q -rf -p no:cacheprovider "${tests[@]}" > "$log" 2>&1
  summary=$(tail -1 "$log")
  failed=$(grep '^FAILED' "$log" | cut -c1-300 | tr '\n' ' ')
  echo "| $run | $summary ${failed:+($failed)} | $(( $(date +%s) - started )) | $load |" >> "$out"
  echo "run $run: $summary $failed"
  [ -z "$failed" ] || cp "$log" "${out%.md}_failure_$run.log"
done
