#!/usr/bin/env bash
# Runs the README's secured `run` / `produce` / `tail` test several times in a row and tallies how
# each `run` stopped after Ctrl-C (the test fails unless it exits 130 within 60 s): whether the
# Ctrl-C came while `run` was still starting, and the stop warnings its log shows:
#   bash tests/benchmarks/run_stop_loop.sh [RUNS] [OUT]   -> OUT (tests/benchmarks/results/run_stop_loop.md)
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-10}
test=tests/integration/test_secured_kafka.py::test_a_new_user_with_a_settings_file_runs_produces_and_tails_over_sasl_ssl
out=${2:-tests/benchmarks/results/run_stop_loop.md}
base=$(mktemp -d)
{
  echo "# \`run\` stopping after Ctrl-C on a SASL_SSL broker, $runs runs in a row"
  echo
  echo "\`bash tests/benchmarks/run_stop_loop.sh $runs $out\` on $(date -u +%Y-%m-%d), $(nproc) cores, at $(git rev-parse --short HEAD)."
  echo
  echo "| run | result | seconds | load at start | Ctrl-C while starting | stop warnings in the run's log |"
  echo "|---|---|---|---|---|---|"
} > "$out"
for run in $(seq 1 "$runs"); do
  load=$(cut -d ' ' -f 1 /proc/loadavg)
  started=$(date +%s)
  log=$(mktemp)
  python -m pytest -q -rf -p no:cacheprovider --basetemp "$base/$run" "$test" > "$log" 2>&1
  summary=$(tail -1 "$log")
  warnings=$(grep -ho 'stop: [^(]*' "$base/$run"/*/run.log 2>/dev/null | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')
  starting=$(grep -q 'interrupted while starting' "$base/$run"/*/run.log 2>/dev/null && echo yes || echo no)
  echo "| $run | $summary | $(( $(date +%s) - started )) | $load | $starting | ${warnings:-none} |" >> "$out"
  echo "run $run: $summary ${warnings}"
  grep -q '^FAILED' "$log" && cp "$log" "${out%.md}_failure_$run.log"
done
rm -rf "$base"
