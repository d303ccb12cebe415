"""Commands on the dead-letter topic: count what is there, and replay a selection of it.

The reading, selecting and sending live in ``streams.deadletters``; this module parses options,
prints tables and draws the progress bar.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone
from typing import NoReturn

import typer
from rich.progress import Progress
from rich.table import Table

from streaminfer.cli.common import BootstrapOpt, console, err_console, friendly_errors, load_settings
from streaminfer.settings import AppSettings
from streaminfer.streams.deadletters import DEFAULT_MAX_REPLAYS, DeadLetter, Selection

deadletters_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic: count it, replay from it.")

ReasonOpt = typer.Option(None, "--reason", "-r", help="Only this reason (repeatable), e.g. feature_store_unavailable.")
ModelOpt = typer.Option(None, "--model", "-m", help="Only this model (repeatable).")
SinceOpt = typer.Option(None, "--since", help="Dead-lettered at or after: ISO 8601 (UTC unless it says) or epoch ms.")
UntilOpt = typer.Option(None, "--until", help="Dead-lettered before: ISO 8601 (UTC unless it says) or epoch ms.")
RetriableOpt = typer.Option(None, "--retriable/--not-retriable", help="Only those a replay can (or cannot) fix.")


@deadletters_app.command("stats")
@friendly_errors
def deadletters_stats(
    bootstrap: str | None = BootstrapOpt,
    reason: list[str] | None = ReasonOpt,
    model: list[str] | None = ModelOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    retriable: bool | None = RetriableOpt,
) -> None:
    """Dead letters counted by reason, model, version and retriable."""
    from streaminfer.streams.deadletters import stats

    selection = _selection(reason, model, since, until, retriable)
    settings = load_settings(bootstrap)
    letters = [d for d in asyncio.run(_read(settings)) if selection.matches(d)]
    table = Table("reason", "model", "version", "retriable", "count")
    for key, count in sorted(stats(letters).items(), key=lambda item: (-item[1], str(item[0]))):
        retriable_text = "?" if key.retriable is None else str(key.retriable).lower()
        table.add_row(key.reason, key.model or "-", key.version or "-", retriable_text, str(count))
    console.print(table)
    console.print(f"{len(letters)} dead letters on {settings.topics.deadletter}")


@deadletters_app.command("replay")
@friendly_errors
def deadletters_replay(
    bootstrap: str | None = BootstrapOpt,
    reason: list[str] | None = ReasonOpt,
    model: list[str] | None = ModelOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    retriable: bool | None = RetriableOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed; send nothing."),
    max_replays: int = typer.Option(
        DEFAULT_MAX_REPLAYS, "--max-replays", min=1, envvar="STREAMINFER_DEADLETTERS_MAX_REPLAYS",
        help="A request already replayed this many times is not sent again (it is reported as capped).",
    ),
) -> None:
    """Send the selected dead letters' requests to the requests topic again, with their original
    key, value and headers plus replay-of and replay-count headers."""
    from streaminfer.streams.deadletters import plan_replay

    selection = _selection(reason, model, since, until, retriable)
    settings = load_settings(bootstrap)
    letters, sent_before = asyncio.run(_read_with_replays(settings, selection))
    plan = plan_replay(letters, selection, max_replays, sent_before)
    target = settings.topics.requests
    if plan.capped:
        console.print(f"{len(plan.capped)} selected dead letters were already replayed {max_replays} "
                      "times and are not sent again (--max-replays)")
    if plan.masked:
        console.print(f"{len(plan.masked)} selected dead letters hold a request masked by its model's "
                      "privacy policy, not the original, and are not replayed")
    if dry_run:
        console.print(f"dry run: would replay {len(plan.send)} dead letters to {target}")
        return
    sent = asyncio.run(_replay(settings, target, plan.send))
    console.print(f"replayed {sent} dead letters to {target}")


async def _read(settings: AppSettings) -> list[DeadLetter]:
    from streaminfer.streams.clients import KafkaClients, check_reachable
    from streaminfer.streams.deadletters import read_dead_letters

    await check_reachable(settings.kafka)
    return await read_dead_letters(KafkaClients(settings.kafka), settings.topics.deadletter)


async def _read_with_replays(settings: AppSettings, selection: Selection) -> tuple[list[DeadLetter], Counter[str]]:
    from streaminfer.streams.clients import KafkaClients
    from streaminfer.streams.deadletters import read_replays

    letters = [d for d in await _read(settings) if selection.matches(d)]
    if not letters:
        return letters, Counter()
    since_ms = min(d.timestamp_ms for d in letters)
    return letters, await read_replays(KafkaClients(settings.kafka), settings.topics.requests, since_ms)


async def _replay(settings: AppSettings, target: str, letters: list[DeadLetter]) -> int:
    from streaminfer.streams.clients import KafkaClients
    from streaminfer.streams.deadletters import replay

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("replaying", total=len(letters))
        return await replay(KafkaClients(settings.kafka), target, letters,
                            lambda n: progress.advance(task, n))


def _selection(
    reasons: list[str] | None, models: list[str] | None, since: str | None, until: str | None,
    retriable: bool | None,
) -> Selection:
    from streaminfer.schemas.deadletter import Reason

    known = {r.value for r in Reason}
    unknown = sorted(set(reasons or ()) - known)
    if unknown:
        _bad_option(f"--reason {', '.join(unknown)} is not a dead-letter reason; known: {', '.join(sorted(known))}")
    since_ms, until_ms = _epoch_ms("--since", since), _epoch_ms("--until", until)
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        _bad_option(f"--since {since} is not before --until {until}")
    return Selection(frozenset(reasons or ()), frozenset(models or ()), since_ms, until_ms, retriable)


def _epoch_ms(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _bad_option(f"{flag} takes an ISO 8601 time (2026-11-29T04:00) or epoch milliseconds; got {text!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _bad_option(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
