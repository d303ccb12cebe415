#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1 without Docker.
#
# Why: a real broker for local development of the pipeline (exactly-once,
# idempotent producers and fencing need real Kafka). Data lives in a temp dir
# that is deleted when the broker stops: this is a scratch broker, not storage.
#
# Usage: infra/kafka/kafka.sh start [PORT]     (PORT defaults to 9092)
# Env:   STREAMINFER_KAFKA_CONTROLLER_PORT     (defaults to PORT + 1)
#        KAFKA_HEAP_OPTS                       (defaults to -Xmx512m)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") start [PORT]

Runs an Apache Kafka broker in the foreground on 127.0.0.1:PORT (default 9092).
Jars are fetched from Maven Central on first use (infra/kafka/fetch-jars.sh).
Stop it with Ctrl-C; its temporary data dir is removed on exit.
EOF
  exit 2
}

valid_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535))
}

random_cluster_id() {
  # KRaft wants a base64url-encoded 16-byte UUID: 22 chars without padding.
  head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c 1-22
}

write_properties() {
  local file="$1" port="$2" cport="$3" data="$4"
  cat >"$file" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

start() {
  local port="$1"
  local cport="${STREAMINFER_KAFKA_CONTROLLER_PORT:-$((port + 1))}"
  valid_port "$cport" || { echo "invalid controller port: $cport" >&2; usage; }

  command -v java >/dev/null || { echo "java not found: install a JDK/JRE 17+ (e.g. apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
  local libs
  libs="$("$here/fetch-jars.sh")"

  # Global, not local: the EXIT trap runs after this function has returned.
  data="$(mktemp -d -t streaminfer-kafka.XXXXXX)"
  trap 'rm -rf -- "$data"' EXIT
  write_properties "$data/server.properties" "$port" "$cport" "$data"

  # Log4j's own shutdown hook would stop logging before the broker's, losing
  # the shutdown lines; the broker flushes its logs itself.
  local jvm=(java "-Dlog4j2.configurationFile=$here/log4j2.properties" -Dlog4j.shutdownHookEnabled=false -cp "$libs/*")
  "${jvm[@]}" kafka.tools.StorageTool format -t "$(random_cluster_id)" -c "$data/server.properties" >/dev/null

  echo "Kafka broker on 127.0.0.1:$port (controller $cport, data $data); Ctrl-C to stop" >&2
  # Not exec: the EXIT trap must still remove the data dir. Forward signals so
  # a SIGTERM to this script shuts the broker down cleanly instead of orphaning it.
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
  "${jvm[@]}" ${KAFKA_HEAP_OPTS:--Xmx512m} kafka.Kafka "$data/server.properties" &
  local pid=$! stopping=0
  trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || true' INT TERM
  local rc=0
  wait "$pid" || rc=$?
  # A trapped signal interrupts `wait`; wait again for the broker's real exit.
  if kill -0 "$pid" 2>/dev/null; then wait "$pid" || rc=$?; fi
  # Stopped on request: the JVM's 143 (killed by SIGTERM) is the expected outcome.
  if ((stopping)); then return 0; fi
  return "$rc"
}

main() {
  [[ $# -ge 1 && "$1" == "start" ]] || usage
  [[ $# -le 2 ]] || usage
  local port="${2:-9092}"
  valid_port "$port" || { echo "invalid port: $port" >&2; usage; }
  start "$port"
}

main "$@"
