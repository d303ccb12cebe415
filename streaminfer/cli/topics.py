"""Commands of the topic declaration: list every topic the system uses, and create them.

The layout comes from ``streams.topics.Topology`` and the settings, the same place every service
asks, so a cluster prepared by ``topics create`` (docker-compose's init step does it) holds the
topics exactly as the services would create them.
"""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from streaminfer.cli.common import BootstrapOpt, console, friendly_errors, load_settings
from streaminfer.topology import topology

topics_app = typer.Typer(no_args_is_help=True, help="The topics the system uses: list them, create them.")


@topics_app.command("list")
@friendly_errors
def topics_list() -> None:
    """Every topic with its partitions, replicas and clean-up policy, as the settings declare them."""
    table = Table("topic", "partitions", "replicas", "clean-up")
    for spec in topology(load_settings()).all():
        table.add_row(spec.name, str(spec.partitions), str(spec.replication_factor),
                      "compact" if spec.compacted else "delete")
    console.print(table)


@topics_app.command("create")
@friendly_errors
def topics_create(bootstrap: str | None = BootstrapOpt) -> None:
    """Create every declared topic that is missing (existing topics are left as they are)."""
    from streaminfer.streams.clients import check_reachable, ensure_topics

    settings = load_settings(bootstrap)
    specs = topology(settings).all()

    async def create() -> None:
        await check_reachable(settings.kafka)
        await ensure_topics(settings.kafka, specs)

    asyncio.run(create())
    console.print(f"{len(specs)} topics declared; the missing ones created on {settings.kafka.bootstrap}")
