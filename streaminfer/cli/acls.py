"""``streaminfer acls``: the Kafka ACLs each component needs, for the settings in force."""

from __future__ import annotations

from enum import Enum

import typer
import yaml
from rich.table import Table

from streaminfer.cli.common import console, friendly_errors, load_settings


class AclFormat(str, Enum):
    table = "table"
    kafka_acls = "kafka-acls"
    strimzi = "strimzi"


@friendly_errors
def acls_command(
    principal: str = typer.Option("User:streaminfer", help="Principal to grant (kafka-acls format)."),
    component: list[str] | None = typer.Option(
        None, "--component", "-c",
        help="Only these components (pipeline, monitor, alerting, experiments, features, clients)."),
    output: AclFormat = typer.Option(AclFormat.table, "--format", help="table, kafka-acls (a bash script) or strimzi (KafkaUser YAML)."),
    cluster: str = typer.Option("my-cluster", help="strimzi: the Kafka cluster's name (strimzi.io/cluster label)."),
) -> None:
    """Print the ACLs each component needs: exactly what it reads and writes, nothing more."""
    from streaminfer.acls import component_access, kafka_acls_script, select, strimzi_users

    try:
        access = select(component_access(load_settings()), component)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--component") from None
    if output is AclFormat.kafka_acls:
        print(kafka_acls_script(principal, access), end="")
    elif output is AclFormat.strimzi:
        print(yaml.safe_dump_all(strimzi_users(access, cluster), sort_keys=False), end="")
    else:
        table = Table("component", "resource", "name", "operations")
        for entry in access:
            for grant in entry.grants:
                name = f"{grant.name}* (prefix)" if grant.prefixed else grant.name
                table.add_row(entry.component, grant.resource_type, name, ", ".join(grant.operations))
        console.print(table)
