"""`streaminfer cost report`: cost per 1,000 answers by model version, as a table and a plot."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.table import Table

from streaminfer.cli.common import console, friendly_errors, load_settings
from streaminfer.errors import ReportRangeInvalid

cost_app = typer.Typer(no_args_is_help=True, help="What inference costs, per model version.")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``15m``, ``6h``, ``2d`` in seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ReportRangeInvalid(f"{option} {text!r}: write a duration such as 90s, 15m, 6h or 2d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_until(text: str | None) -> float:
    """``now`` (default) or an ISO 8601 time (UTC when it names no zone)."""
    if text is None or text == "now":
        return time.time()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ReportRangeInvalid(f"--until {text!r}: write now or an ISO 8601 time such as 2026-11-29T12:00") from None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


@cost_app.command("report")
@friendly_errors
def report(
    prometheus: str = typer.Option("http://127.0.0.1:9090", "--prometheus", help="Prometheus that scrapes the consumers."),
    since: str = typer.Option("24h", "--since", help="How far back the report starts (90s, 15m, 6h, 2d)."),
    until: str | None = typer.Option(None, "--until", help="Where it ends: now (default) or an ISO 8601 time (UTC)."),
    step: str | None = typer.Option(None, "--step", help="Width of each point of the plot (default: the range / 60, at least 15s)."),
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    out: Path = typer.Option(Path("cost.png"), "--out", help="The plot: .png (matplotlib) or .html."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the table, at full precision, to this CSV file."),
) -> None:
    """Print each version's answers and CPU-seconds, GPU-seconds and money per 1,000 answers, and
    plot money per 1,000 answers over time by version (so a variant's saving shows)."""
    from streaminfer.reports.cost import (
        COLUMNS,
        NOTE,
        PrometheusApi,
        cost_over_time,
        cost_rows,
        version_costs,
        write_csv,
        write_plot,
    )

    end = parse_until(until)
    start = end - parse_duration(since, "--since")
    step_s = parse_duration(step, "--step") if step else max(15.0, (end - start) / 60)
    if step_s > end - start:
        raise ReportRangeInvalid(f"--step {step} is longer than the range --since {since}")
    currency = load_settings().pipeline.cost.currency
    api = PrometheusApi(prometheus)
    costs = version_costs(api, start, end, model)
    table = Table(title=f"cost per 1,000 answers ({currency}), {_when(start)} to {_when(end)} UTC")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "version") else "right")
    for row in cost_rows(costs):
        table.add_row(*row)
    console.print(table)
    console.print(NOTE, style="dim")
    if csv is not None:
        console.print(f"table: {write_csv(costs, csv).resolve()}")
    path = write_plot(cost_over_time(api, start, end, step_s, model), out, currency,
                      f"{currency} per 1,000 answers by version" + (f" ({model})" if model else ""), (start, end))
    console.print(f"plot: {path.resolve()}")


def _when(at: float) -> str:
    return f"{datetime.fromtimestamp(at, tz=timezone.utc):%Y-%m-%d %H:%M}"
