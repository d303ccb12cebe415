"""The Kafka ACLs each component needs, derived from the settings, and nothing more.

A company cluster grants a service account exactly what it uses. The list here is built from the
same settings that name the topics and groups, so renaming a topic renames its ACL; ``streaminfer
acls`` prints it as a table, as ``kafka-acls`` commands, or as Strimzi ``KafkaUser`` resources
(``infra/kafka/acls.sh`` and ``infra/k8s/base/kafka-users.yaml`` are its output at the defaults).

Reading a topic in a group needs Read on the topic and Read on the group; Read and Write imply
Describe, which is what listing and metadata need. Exactly-once producers need Write and Describe
on their transactional ids, all prefixed ``<kafka.group_id>-``. Creating topics (``streaminfer
topics create``) is an administrator's job and not granted to any component.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from streaminfer.settings import AppSettings

ResourceType = Literal["topic", "group", "transactional-id"]
Operation = Literal["Read", "Write", "Describe"]


@dataclass(frozen=True)
class Grant:
    resource_type: ResourceType
    name: str
    operations: tuple[Operation, ...]
    prefixed: bool = False
    """A prefix pattern (transactional ids, one per partition) rather than one literal name."""


@dataclass(frozen=True)
class ComponentAccess:
    component: str
    what: str
    grants: tuple[Grant, ...]


def _reads(*topics: str) -> list[Grant]:
    return [Grant("topic", topic, ("Read",)) for topic in topics]


def _writes(*topics: str) -> list[Grant]:
    return [Grant("topic", topic, ("Write",)) for topic in topics]


def _group(name: str) -> Grant:
    return Grant("group", name, ("Read",))


def _merged(component: str, what: str, grants: Iterable[Grant]) -> ComponentAccess:
    """One grant per resource: a topic both read and written gets Read and Write in one entry."""
    merged: dict[tuple[str, str, bool], list[Operation]] = {}
    for grant in grants:
        operations = merged.setdefault((grant.resource_type, grant.name, grant.prefixed), [])
        operations.extend(op for op in grant.operations if op not in operations)
    return ComponentAccess(component, what, tuple(
        Grant(kind, name, tuple(operations), prefixed)  # type: ignore[arg-type]
        for (kind, name, prefixed), operations in merged.items()))


def component_access(settings: AppSettings) -> list[ComponentAccess]:
    """Per component, what it reads and writes, in the order a reader follows the data."""
    topics, monitor, alerting, features = settings.topics, settings.monitor, settings.alerting, settings.features
    kafka = settings.kafka
    return [
        _merged("pipeline", "consumers: requests in, predictions, dead letters, shadow outputs, health out; "
                "the registry on the control topic (the driver's registry actor writes it, consumers read it)", (
            *_reads(topics.requests, topics.control),
            *_writes(topics.predictions, topics.deadletter, topics.shadow, monitor.topics.metrics, topics.control),
            _group(kafka.group_id),
            Grant("transactional-id", f"{kafka.group_id}-", ("Write", "Describe"), prefixed=True),
        )),
        _merged("monitor", "drift and quality monitor", (
            *_reads(topics.requests, topics.predictions, monitor.topics.labels),
            *_writes(monitor.topics.drift, monitor.topics.metrics),
            _group(monitor.group_id),
        )),
        _merged("alerting", "alert rules and webhook delivery", (
            *_reads(monitor.topics.drift, monitor.topics.metrics, alerting.topics.silences, alerting.topics.outbox),
            *_writes(alerting.topics.outbox, alerting.topics.deadletter),
            _group(alerting.group_id), _group(alerting.delivery_group_id),
        )),
        _merged("experiments", "A/B, canary and shadow evaluation", (
            *_reads(topics.predictions, topics.deadletter, topics.shadow, monitor.topics.labels),
            *_writes(monitor.topics.metrics),
            _group(settings.experiments.group_id),
        )),
        _merged("features", "the Faust feature app and the feature store sink", (
            *_reads(topics.requests, topics.predictions, topics.deadletter),
            *[Grant("topic", name, ("Read", "Write")) for name in (*features.topics.all(), *features.changelog_topics())],
            _group(features.app_id), _group(features.sink_group_id),
        )),
        _merged("clients", "applications and operators: streaminfer produce, tail, deadletters replay, alerts silence", (
            *_writes(topics.requests, monitor.topics.labels, alerting.topics.silences),
            *_reads(topics.predictions, topics.deadletter),
        )),
    ]


def select(access: list[ComponentAccess], components: Iterable[str] | None) -> list[ComponentAccess]:
    if components is None:
        return access
    wanted = set(components)
    unknown = wanted - {entry.component for entry in access}
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {[entry.component for entry in access]}")
    return [entry for entry in access if entry.component in wanted]


def kafka_acls_commands(principal: str, access: list[ComponentAccess]) -> list[list[str]]:
    """``kafka-acls`` arguments (after ``--bootstrap-server`` and ``--command-config``): one
    command per set of operations and pattern, naming every resource it applies to."""
    batches: dict[tuple[tuple[Operation, ...], bool], list[Grant]] = {}
    for entry in access:
        for grant in entry.grants:
            batches.setdefault((grant.operations, grant.prefixed), []).append(grant)
    commands = []
    for (operations, prefixed), grants in batches.items():
        command = ["--add", "--allow-principal", principal]
        for operation in operations:
            command += ["--operation", operation]
        for grant in dict.fromkeys(grants):
            command += [f"--{grant.resource_type}", grant.name]
        if prefixed:
            command += ["--resource-pattern-type", "prefixed"]
        commands.append(command)
    return commands


def kafka_acls_script(principal: str, access: list[ComponentAccess]) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"# The Kafka ACLs streaminfer needs, for {principal} (generated by `streaminfer acls --format kafka-acls`).",
        "# Usage: BOOTSTRAP=host:9093 ADMIN_CONFIG=admin.properties bash acls.sh",
        "#   KAFKA_ACLS: the kafka-acls command (default: kafka-acls.sh on PATH).",
        "set -euo pipefail",
        ': "${BOOTSTRAP:?set BOOTSTRAP to a listener of the cluster}"',
        ': "${ADMIN_CONFIG:?set ADMIN_CONFIG to the admin client properties file}"',
        'KAFKA_ACLS="${KAFKA_ACLS:-kafka-acls.sh}"',
    ]
    for command in kafka_acls_commands(principal, access):
        lines.append('$KAFKA_ACLS --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \\')
        lines.append("    " + " ".join(_quote(arg) for arg in command))
    return "\n".join(lines) + "\n"


def strimzi_users(access: list[ComponentAccess], cluster: str, authentication: str = "scram-sha-512") -> list[dict]:
    """One Strimzi ``KafkaUser`` per component, each with exactly its ACLs."""
    users = []
    for entry in access:
        acls = [
            {"resource": {"type": _strimzi_type(grant.resource_type), "name": grant.name,
                          "patternType": "prefix" if grant.prefixed else "literal"},
             "operations": list(grant.operations), "host": "*"}
            for grant in entry.grants
        ]
        users.append({
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaUser",
            "metadata": {"name": f"streaminfer-{entry.component}", "labels": {"strimzi.io/cluster": cluster}},
            "spec": {"authentication": {"type": authentication},
                     "authorization": {"type": "simple", "acls": acls}},
        })
    return users


def _strimzi_type(resource_type: ResourceType) -> str:
    return {"topic": "topic", "group": "group", "transactional-id": "transactionalId"}[resource_type]


def _quote(arg: str) -> str:
    return arg if all(c.isalnum() or c in "-_.:=/" for c in arg) else "'" + arg.replace("'", "'\\''") + "'"
