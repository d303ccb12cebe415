"""`streaminfer audit report`: the compliance report of a window, as HTML and JSON.

The report is built in ``streaminfer.reports.audit`` from what the system records (the registry's
audit logs, the experiment controller's looks, the alerting outbox, model metadata, the
dead-letter topic); this module parses the window and prints where the files went.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NoReturn

import typer

from streaminfer.cli.common import BootstrapOpt, RepoOpt, console, err_console, friendly_errors, load_settings

audit_app = typer.Typer(no_args_is_help=True, help="What the system did, for an audit: versions, changes, alerts.")


@audit_app.command("report")
@friendly_errors
def report(
    since: str | None = typer.Option(None, "--since", help="From: ISO 8601 date or time (UTC unless it says) or epoch "
                                     "ms (default: the oldest record)."),
    until: str | None = typer.Option(None, "--until", help="Before: ISO 8601 date or time (UTC unless it says) or "
                                     "epoch ms (default: now)."),
    out: Path = typer.Option(Path(".streaminfer/audit"), "--out", help="Directory for audit.html and audit.json."),
    kafka: bool = typer.Option(True, "--kafka/--no-kafka", help="Read alerts and dead letters from Kafka "
                               "(--no-kafka leaves them out)."),
    bootstrap: str | None = BootstrapOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Versions served and for how long, every promotion, rollback, alias and tag change with who and
    why, experiments with their verdicts, alerts fired and resolved, privacy policies in force and
    dead letters by reason, over a window; written as HTML and JSON."""
    from streaminfer.reports.audit import Window, build_report, write_report
    from streaminfer.workers.models.registry import ModelRegistry
    from streaminfer.workers.models.repository import ModelRepository

    since_ms, until_ms = _moment("--since", since), _moment("--until", until)
    until_ms = until_ms if until_ms is not None else int(time.time() * 1000)
    if since_ms is not None and since_ms >= until_ms:
        _bad_option(f"--since {since} is not before --until {until or 'now'}")
    settings = load_settings(bootstrap, model_repo)
    notifications: list = []
    letters: list = []
    sources = {"alerts": "not read (--no-kafka)", "dead_letters": "not read (--no-kafka)"}
    if kafka:
        from streaminfer.reports.audit_sources import read_sources

        notifications, letters, sources = asyncio.run(read_sources(settings))
    registry = ModelRegistry(ModelRepository(settings.model_repository))
    sources = {"changes and versions served": f"audit logs under {settings.model_repository}",
               "experiments": f"controller looks in {settings.experiments.snapshots_dir}", **sources}
    built = build_report(registry, settings.experiments.snapshots_dir, Window(since_ms, until_ms),
                         notifications, letters, sources)
    json_path, html_path = write_report(built, out)
    c = built.counts
    console.print(f"{built.since} to {built.until}: {c.promotions} promotions, {c.rollbacks} rollbacks, "
                  f"{c.tag_changes} tag changes, {c.experiments} experiments, {c.alerts_fired} alerts fired "
                  f"({c.alerts_resolved} resolved), {c.dead_letters} dead letters", highlight=False, soft_wrap=True)
    console.print(f"report: {html_path.resolve()}\njson:   {json_path.resolve()}", highlight=False, soft_wrap=True)


def _moment(flag: str, text: str | None) -> int | None:
    from streaminfer.reports.audit import parse_moment

    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError:
        _bad_option(f"{flag} takes an ISO 8601 date or time (2026-11-29 or 2026-11-29T04:00) or epoch milliseconds; "
                    f"got {text!r}")


def _bad_option(message: str) -> NoReturn:
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
