#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (KRaft, no ZooKeeper) from Maven Central once.
#
# Why: the integration tests and infra/kafka/kafka.sh need a real broker
# (transactions, idempotence, fencing) and this project cannot assume Docker.
# Maven resolves the official kafka_2.13 artifact plus a Log4j 2 backend into
# one folder of jars that `java -cp "libs/*" kafka.Kafka` can run.
#
# Usage: infra/kafka/fetch-jars.sh        # prints the libs dir on stdout
# Env:   STREAMINFER_KAFKA_HOME           # cache root (default ~/.cache/streaminfer/kafka-<version>)
#
# A marker file holding the pom's checksum is written only after a complete
# download, so an interrupted run (or an edited pom) is fetched again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"

die() {
  echo "fetch-jars.sh: $*" >&2
  exit 1
}

kafka_version() {
  # The single source of truth for the version is the pom's <kafka.version>.
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n 1
}

version="$(kafka_version)"
[[ -n "$version" ]] || die "no <kafka.version> found in $pom"

home="${STREAMINFER_KAFKA_HOME:-$HOME/.cache/streaminfer/kafka-$version}"
libs="$home/libs"
marker="$home/.fetched"
want="$(sha256sum "$pom" | cut -d ' ' -f 1)"

already_fetched() {
  [[ -f "$marker" && "$(cat "$marker")" == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null
}

fetch() {
  command -v mvn >/dev/null || die "Maven (mvn) is not installed: install it (e.g. apt-get install maven); it fetches the broker jars from Maven Central once"
  rm -rf "$libs" "$marker"
  mkdir -p "$libs"
  # Maven's own output goes to stderr: stdout carries only the libs dir.
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" >&2 \
    || die "mvn could not resolve org.apache.kafka:kafka_2.13:$version (is Maven Central reachable?); rerun infra/kafka/fetch-jars.sh once it is"
  echo "$want" >"$marker"
}

mkdir -p "$home"
# Parallel test runs may call this at once: serialise them on a lock file.
if command -v flock >/dev/null; then
  exec 9>"$home/.lock"
  flock 9
fi
already_fetched || fetch
echo "$libs"
