"""`streaminfer cost report`: what each model version costs per 1,000 answers, and over time.

The figures come from Prometheus, through its HTTP query API. Every consumer already exports its
measured seconds and spend per version (``streaminfer_cost_*``, ``monitoring.cost.meter``) on its
``/metrics`` endpoint, and the driver lists those endpoints for Prometheus's file-based discovery;
Prometheus is therefore the one place that holds every consumer's figures, across restarts and
rescaling, with the history and retention an operator has already chosen. A file each consumer
appended to would need collecting from every node and would duplicate that.

Counters are read as ``increase`` over the range (the table) or over each step (the plot), so a
consumer that restarts (its counters start again at 0) neither loses nor doubles its figures.
"""

from __future__ import annotations

import csv
import html
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streaminfer.errors import NothingToReport, PrometheusUnreachable
from streaminfer.monitoring.cost.pricing import per_thousand

VersionKey = tuple[str, str]
Series = dict[VersionKey, list[tuple[float, float]]]


class PrometheusApi:
    """Instant and range queries against ``/api/v1/query`` and ``/api/v1/query_range``."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def instant(self, query: str, at: float) -> list[tuple[dict[str, str], float]]:
        data = self._get("query", {"query": query, "time": f"{at:.3f}"})
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def range(self, query: str, start: float, end: float, step_s: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        data = self._get("query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"})
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def _get(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        address = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=self._timeout_s) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise PrometheusUnreachable(self.url, f"HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusUnreachable(self.url, str(getattr(exc, "reason", exc))) from exc
        if body.get("status") != "success":
            raise PrometheusUnreachable(self.url, str(body.get("error", body)))
        return body["data"]


@dataclass(frozen=True)
class VersionCost:
    """One version's totals over the report's range."""

    model: str
    version: str
    answers: float
    consumer_cpu_s: float
    inference_cpu_s: float
    gpu_s: float
    spend: float

    def per_thousand(self) -> dict[str, float]:
        return {
            "consumer_cpu_s": per_thousand(self.consumer_cpu_s, self.answers),
            "inference_cpu_s": per_thousand(self.inference_cpu_s, self.answers),
            "gpu_s": per_thousand(self.gpu_s, self.answers),
            "spend": per_thousand(self.spend, self.answers),
        }


def _selector(model: str | None) -> str:
    return f'{{model="{model}"}}' if model else ""


def _cpu_selector(model: str | None, part: str) -> str:
    return f'{{model="{model}",part="{part}"}}' if model else f'{{part="{part}"}}'


def version_costs(api: PrometheusApi, start: float, end: float, model: str | None = None) -> list[VersionCost]:
    """Each version's answers, seconds and spend between ``start`` and ``end``."""
    window = f"{max(1, round(end - start))}s"
    sel = _selector(model)

    def totals(metric: str, selector: str) -> dict[VersionKey, float]:
        query = f"sum by (model, version) (increase({metric}{selector}[{window}]))"
        return {(m.get("model", ""), m.get("version", "")): v for m, v in api.instant(query, end)}

    answers = totals("streaminfer_cost_answers_total", sel)
    consumer = totals("streaminfer_cost_cpu_seconds_total", _cpu_selector(model, "consumer"))
    inference = totals("streaminfer_cost_cpu_seconds_total", _cpu_selector(model, "inference"))
    gpu = totals("streaminfer_cost_gpu_seconds_total", sel)
    spend = totals("streaminfer_cost_spend_total", sel)
    keys = sorted({*answers, *spend})
    return [VersionCost(m, v, answers.get((m, v), 0.0), consumer.get((m, v), 0.0), inference.get((m, v), 0.0),
                        gpu.get((m, v), 0.0), spend.get((m, v), 0.0)) for m, v in keys]


def cost_over_time(api: PrometheusApi, start: float, end: float, step_s: float, model: str | None = None) -> Series:
    """Money per 1,000 answers in each step, per version (steps without answers are left out)."""
    window = f"{max(1, round(step_s))}s"
    sel = _selector(model)
    query = (f"1000 * sum by (model, version) (increase(streaminfer_cost_spend_total{sel}[{window}]))"
             f" / sum by (model, version) (increase(streaminfer_cost_answers_total{sel}[{window}]))")
    series: Series = {}
    for metric, points in api.range(query, start, end, step_s):
        kept = [(t, v) for t, v in points if math.isfinite(v)]
        if kept:
            series[(metric.get("model", ""), metric.get("version", ""))] = kept
    return series


def cost_rows(costs: list[VersionCost]) -> list[list[str]]:
    """The table's rows: model, version, answers, then per 1,000 answers: CPU-s of the consumer
    and of inference, GPU-s, and money."""
    rows = []
    for cost in costs:
        per = cost.per_thousand()
        rows.append([cost.model, cost.version, f"{cost.answers:,.0f}", _fig(per["consumer_cpu_s"]),
                     _fig(per["inference_cpu_s"]), _fig(per["gpu_s"]), _fig(per["spend"], 6), _fig(cost.spend, 6)])
    return rows


COLUMNS = ["model", "version", "answers", "consumer CPU-s/1k", "inference CPU-s/1k", "GPU-s/1k", "cost/1k", "cost"]
NOTE = ("answers and totals are Prometheus's increase() over the range, extrapolated to its edges; "
        "the per-1,000 figures divide two such counts, so the extrapolation cancels out")


def write_csv(costs: list[VersionCost], path: Path) -> Path:
    """The table at full precision, for a spreadsheet."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["model", "version", "answers", "consumer_cpu_s", "inference_cpu_s", "gpu_s", "spend",
                         "consumer_cpu_s_per_1k", "inference_cpu_s_per_1k", "gpu_s_per_1k", "spend_per_1k"])
        for cost in costs:
            per = cost.per_thousand()
            writer.writerow([cost.model, cost.version, cost.answers, cost.consumer_cpu_s, cost.inference_cpu_s,
                             cost.gpu_s, cost.spend, per["consumer_cpu_s"], per["inference_cpu_s"], per["gpu_s"],
                             per["spend"]])
    return path


def write_plot(series: Series, out: Path, currency: str, title: str, span: tuple[float, float] | None = None) -> Path:
    """A PNG (matplotlib) of money per 1,000 answers over time, one line per version, across
    ``span`` (start, end) when given; an HTML page with the same figures as a table if ``out``
    ends in ``.html`` or matplotlib is missing."""
    if not series:
        raise NothingToReport("no answers with a cost in that range: is Prometheus scraping the consumers?")
    if out.suffix.lower() != ".html":
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.dates as mdates
            import matplotlib.pyplot as plt
        except ImportError:
            out = out.with_suffix(".html")
        else:
            fig, ax = plt.subplots(figsize=(9, 4))
            for (model, version), points in sorted(series.items()):
                times: Any = [datetime.fromtimestamp(t, tz=timezone.utc) for t, _ in points]
                ax.plot(times, [v for _, v in points], marker=".", label=f"{model} {version}")
            ax.set_ylabel(f"{currency} per 1,000 answers")
            ax.set_title(title)
            ax.set_ylim(bottom=0)
            if span is not None:
                ax.set_xlim(*(datetime.fromtimestamp(t, tz=timezone.utc) for t in span))  # type: ignore[arg-type]
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.set_xlabel("UTC")
            ax.legend(loc="upper left")
            fig.savefig(out, dpi=100, bbox_inches="tight")
            plt.close(fig)
            return out
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{html.escape(v)}</td>"
        f"<td>{datetime.fromtimestamp(t, tz=timezone.utc):%Y-%m-%d %H:%M:%S}</td><td>{value:.6g}</td></tr>"
        for (m, v), points in sorted(series.items()) for t, value in points
    )
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                   f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1><table border=1>"
                   f"<tr><th>model</th><th>version</th><th>time (UTC)</th><th>{html.escape(currency)} per 1,000 answers</th></tr>"
                   f"{rows}</table></body></html>")
    return out


def _fig(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}g}"
