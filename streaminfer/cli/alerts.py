"""Commands of alerting: run the rules consumer and delivery, check a rules file, silences."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from streaminfer.cli.common import (
    BootstrapOpt,
    StopSignals,
    console,
    exit_if_interrupted,
    friendly_errors,
    load_settings,
    until_signal_or,
)
from streaminfer.settings import AppSettings

alerts_app = typer.Typer(no_args_is_help=True, help="Alert rules, silences and webhook delivery.")
RulesOpt = typer.Option(..., "--rules", "-r", help="Alerting rules file (YAML; see infra/alerts/rules.yml).")


@alerts_app.command("check")
@friendly_errors
def alerts_check(
    rules: Path = RulesOpt,
    check_receivers: bool = typer.Option(True, help="Also check that every receiver accepts connections."),
) -> None:
    """Validate a rules file (and reach its receivers) without starting anything."""
    from streaminfer.monitoring.alerting.config import load_config
    from streaminfer.streams.alerting.rules_consumer import check_receivers as reach

    config, receivers = load_config(rules)
    if check_receivers:
        asyncio.run(reach(receivers))
    console.print(f"{rules}: {len(config.rules)} rules, receivers {', '.join(r.name for r in receivers)}: ok")


@alerts_app.command("run")
@friendly_errors
def alerts_run(
    rules: Path = RulesOpt,
    bootstrap: str | None = BootstrapOpt,
    check_receivers: bool = typer.Option(True, help="Refuse to start if a receiver does not accept connections."),
) -> None:
    """Evaluate the rules on the monitoring topics and deliver notifications to the webhooks,
    until interrupted. Runs apart from the pipeline: a slow receiver never slows predictions."""
    settings = load_settings(bootstrap, alerting={"rules_file": rules, "check_receivers": check_receivers})
    exit_if_interrupted(asyncio.run(_alerts_until_signal(settings)))


async def _alerts_until_signal(settings: AppSettings) -> bool:
    from streaminfer.alerting_service import start_alerting
    from streaminfer.streams.clients import check_reachable

    signals = StopSignals()  # a Ctrl-C while starting stops the command once it is up
    await check_reachable(settings.kafka)
    running = await start_alerting(settings)
    assert running.config is not None
    console.print(f"alerting: {len(running.config.rules)} rules on {settings.monitor.topics.drift} and "
                  f"{settings.monitor.topics.metrics}; outbox {settings.alerting.topics.outbox}; receivers "
                  f"{', '.join(r.name for r in running.receivers)} (Ctrl-C to stop)")
    return await until_signal_or(running.wait(), running.stop, signals)


@alerts_app.command("silence")
@friendly_errors
def alerts_silence(
    match: list[str] = typer.Option(..., "--match", "-m", help="Label matcher: name=value, name!=value, name=~regex, name!~regex (repeat)."),
    duration: str = typer.Option("1h", help="How long: 30m, 2h, 1d."),
    comment: str = typer.Option("", help="Why."),
    author: str = typer.Option("", "--by", help="Who (default: $USER)."),
    bootstrap: str | None = BootstrapOpt,
) -> None:
    """Mute alerts whose labels match, until the silence expires."""
    from streaminfer.alerting_service import add_silence

    settings = load_settings(bootstrap)
    silence = asyncio.run(add_silence(settings, match, duration, comment, author))
    console.print(f"silence {silence.id} until {_when(silence.ends_ms)} for {', '.join(match)}")


@alerts_app.command("expire")
@friendly_errors
def alerts_expire(silence_id: str = typer.Argument(..., help="Silence id from `alerts list`."),
                  bootstrap: str | None = BootstrapOpt) -> None:
    """End a silence now."""
    from streaminfer.alerting_service import expire_silence

    asyncio.run(expire_silence(load_settings(bootstrap), silence_id))
    console.print(f"silence {silence_id} expired")


@alerts_app.command("list")
@friendly_errors
def alerts_list(bootstrap: str | None = BootstrapOpt) -> None:
    """Alerts as last notified (firing or resolved) and the active silences."""
    from rich.table import Table

    from streaminfer.alerting_service import current_alerts

    alerts, silences = asyncio.run(current_alerts(load_settings(bootstrap)))
    table = Table(title="alerts (as last notified)")
    for column in ("status", "alertname", "labels", "since", "receiver"):
        table.add_column(column)
    for alert, receiver in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("alertname",))
        table.add_row(alert.status, alert.labels.get("alertname", ""), labels, alert.startsAt, receiver)
    console.print(table)
    table = Table(title="active silences")
    for column in ("id", "matchers", "until", "by", "comment"):
        table.add_column(column)
    for silence in silences:
        matchers = ", ".join(_show_matcher(m) for m in silence.matchers)
        table.add_row(silence.id, matchers, _when(silence.ends_ms), silence.created_by, silence.comment)
    console.print(table)


def _show_matcher(matcher: Any) -> str:
    op = ("=" if matcher.is_equal else "!=") if not matcher.is_regex else ("=~" if matcher.is_equal else "!~")
    return f"{matcher.name}{op}{matcher.value}"


def _when(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

