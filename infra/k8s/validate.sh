#!/usr/bin/env bash
# Validate every manifest the k8s overlays render, offline, against the real schemas.
#
#   infra/k8s/validate.sh fetch   # once, with the package registries reachable: tools + schemas
#                                 # (does nothing when the cache already holds these versions)
#   infra/k8s/validate.sh         # render each overlay and validate it; no network
#   infra/k8s/validate.sh validate DIR...   # the kustomizations in DIR... instead of the overlays
#
# What `fetch` puts in the cache (STREAMINFER_K8S_CACHE, default ~/.cache/streaminfer/k8s),
# each pinned by version below and taken from a package registry:
#   bin/kustomize, bin/kubeconform   go install (Go module proxy)
#   schemas/ray.io/...               KubeRay's CRDs (Go module ray-operator, config/crd/bases)
#   schemas/monitoring.coreos.com/   the Prometheus Operator's PodMonitor and ScrapeConfig CRDs
#                                    (Go module prometheus-operator, example/prometheus-operator-crd)
#                                    both converted to JSON schema by schemas.py (strict)
#   kubernetes-json-schema/          the built-in kinds' strict JSON schemas shipped in the
#                                    PyPI package kubernetes-validate, their $refs inlined
#                                    (schemas.py standalone)
#   strimzi/                         Strimzi's CRD schemas as validators and TypeScript types,
#                                    npm package @kubernetes-models/strimzi-kafka-operator, and
#                                    TypeScript (see strimzi-validate.mjs: Strimzi publishes its
#                                    CRD files to no package registry reachable here)
# kubeconform -strict checks everything but the Strimzi kinds, which strimzi-validate.mjs checks
# (as strictly: an unknown field is an error there too).
# tests/unit/test_k8s_manifests.py runs this script; .ci/run runs `fetch` before the tests.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
KUBECONFORM_VERSION=v0.7.0
KUBERAY_VERSION=v1.5.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
KUBERNETES_VALIDATE_VERSION=1.37.0   # the PyPI package; it ships schemas for several releases
KUBERNETES_VERSION=1.34.0            # the release validated against
STRIMZI_MODELS_VERSION=1.0.1         # @kubernetes-models/strimzi-kafka-operator: Strimzi 0.49.0's CRDs
TYPESCRIPT_VERSION=5.9.3             # checks the Strimzi documents against the package's types
STRIMZI_KINDS=(Kafka KafkaNodePool KafkaTopic KafkaUser)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STREAMINFER_K8S_CACHE:-$HOME/.cache/streaminfer/k8s}"
marker="$cache/.fetched"
# The cache is good for these versions and this converter only: change either and fetch again.
want="$( (echo "$KUSTOMIZE_VERSION $KUBECONFORM_VERSION $KUBERAY_VERSION $PROMETHEUS_OPERATOR_VERSION" \
  "$KUBERNETES_VALIDATE_VERSION $KUBERNETES_VERSION $STRIMZI_MODELS_VERSION"; cat "$here/schemas.py") |
  sha256sum | cut -d ' ' -f 1)"
python="${PYTHON:-python3}"

die() {
  echo "validate.sh: $*" >&2
  exit 1
}

module_dir() {  # MODULE@VERSION -> the directory the Go module cache holds it in
  (cd "$work" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "$1") |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

fetched() {
  [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$cache/bin/kustomize" && -x "$cache/bin/kubeconform" ]]
}

fetch() {
  if fetched; then
    echo "$cache"
    return
  fi
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "Go is not installed (it builds kustomize and kubeconform and fetches the CRDs)"
  command -v npm >/dev/null || die "npm is not installed (it fetches the Strimzi schemas)"
  rm -rf "$cache" && mkdir -p "$cache/bin"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  GOTOOLCHAIN=local GOBIN="$cache/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  GOTOOLCHAIN=local GOBIN="$cache/bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"

  kuberay="$(module_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")"
  prometheus="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
  "$python" "$here/schemas.py" crds "$cache/schemas" \
    "$kuberay/config/crd/bases/ray.io_rayclusters.yaml" \
    "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" \
    "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_scrapeconfigs.yaml"

  "$python" -m pip download --quiet --no-deps --only-binary :all: -d "$work/wheel" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "$python" - "$work"/wheel/kubernetes_validate-*.whl "$cache" "v$KUBERNETES_VERSION-local-strict" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel, cache, folder = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
prefix = f"kubernetes_validate/kubernetes-json-schema/{folder}/"
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names:
        sys.exit(f"{wheel} has no {prefix}")
    for name in names:
        target = cache / "kubernetes-validate" / folder / name[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(name))
EOF
  "$python" "$here/schemas.py" standalone "$cache/kubernetes-validate/v$KUBERNETES_VERSION-local-strict" \
    "$cache/kubernetes-json-schema/v$KUBERNETES_VERSION-standalone-strict"

  npm install --silent --no-audit --no-fund --prefix "$cache/strimzi" \
    "@kubernetes-models/strimzi-kafka-operator@$STRIMZI_MODELS_VERSION" "typescript@$TYPESCRIPT_VERSION" >/dev/null
  echo "$want" >"$marker"
  echo "$cache"
}

validate() {
  fetched ||
    die "the tools and schemas are not in $cache (or are from another version of this script): run infra/k8s/validate.sh fetch"
  command -v node >/dev/null || die "Node.js is not installed (it runs the Strimzi validators)"
  local skip=() overlay overlays=("$@")
  [[ ${#overlays[@]} -gt 0 ]] || overlays=("$here"/overlays/*/)
  for kind in "${STRIMZI_KINDS[@]}"; do skip+=("kafka.strimzi.io/v1beta2/$kind"); done
  rendered="$(mktemp --suffix=.yaml)"
  trap 'rm -f "$rendered"' EXIT
  for overlay in "${overlays[@]}"; do
    echo "== $overlay"
    "$cache/bin/kustomize" build "$overlay" >"$rendered"
    "$cache/bin/kubeconform" -strict -summary -output text \
      -kubernetes-version "$KUBERNETES_VERSION" \
      -schema-location "$cache/kubernetes-json-schema/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$cache/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
      -skip "$(IFS=,; echo "${skip[*]}")" \
      "$rendered"
    "$python" "$here/schemas.py" pick kafka.strimzi.io <"$rendered" | node "$here/strimzi-validate.mjs" "$cache/strimzi" |
      grep -v ': valid$'
  done
}

case "${1:-validate}" in
  fetch) fetch ;;
  validate) shift || true; validate "$@" ;;
  *) die "usage: validate.sh [fetch|validate]" ;;
esac
