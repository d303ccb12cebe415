#!/usr/bin/env bash
# Everything the project checks, fastest first, stopping at the first lane that fails:
#   1. lint and types (ruff, mypy), then the unit tests (no services, about a minute);
#   2. the integration tests (real brokers, Ray, ONNX Runtime, HTTP, Prometheus, Redis).
# Kafka-semantics tests run on both brokers, the rest on the embedded one
# (STREAMINFER_TEST_ALL_BROKERS=1 runs every broker test on every broker).
# Extra arguments go to both pytest runs (e.g. -x, -k pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== lint and types"
ruff check .
mypy
echo "== unit tests"
python -m pytest tests/unit -q "$@"
echo "== integration tests"
python -m pytest tests/integration "$@"
