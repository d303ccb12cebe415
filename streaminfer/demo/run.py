"""`streaminfer demo`: the whole system on one machine, with predictions shown as they arrive."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streaminfer.app import start_app, start_ray
from streaminfer.demo.drift_scenario import (
    DriftStream,
    DriftSummary,
    drift_stream,
    read_drift_events,
    summarise,
    wait_for_monitor,
)
from streaminfer.demo.model import INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import Payload, demo_payloads, send_all
from streaminfer.scoreboard import Scoreboard
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import make_consumer, make_producer, start_client
from streaminfer.workers.models.repository import ModelRepository


@dataclass
class DemoResult:
    requests: int
    board: Scoreboard
    seconds: float
    batch_sizes: list[int]
    max_batch_size: int
    max_wait_ms: float
    drift: DriftSummary | None = None

    @property
    def complete(self) -> bool:
        return self.board.answered >= self.requests

    def summary(self) -> str:
        rate = self.board.answered / self.seconds if self.seconds > 0 else 0.0
        mean_batch = sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.board.reasons.items()))
        return (
            f"requests={self.requests} predictions={self.board.predictions} "
            f"dead_letters={self.board.dead_letters}{f' ({reasons})' if reasons else ''} "
            f"duplicates={self.board.duplicates} throughput={rate:,.0f}/s "
            f"p50={self.board.percentile_ms(50):.1f}ms p99={self.board.percentile_ms(99):.1f}ms "
            f"batch(mean={mean_batch:.1f} max={max(self.batch_sizes, default=0)} "
            f"limit={self.max_batch_size} wait={self.max_wait_ms:g}ms)"
            + (f"\n{self.drift.line()}" if self.drift else "")
        )


async def run_demo(
    settings: AppSettings, requests: int, console: Console, timeout_s: float = 300.0, drift: bool = False
) -> DemoResult:
    repository = ModelRepository(settings.model_repository)
    entry = build_demo_model(repository)
    console.print(f"model       {entry.name}/{entry.version} at {entry.directory}")
    run_id = uuid.uuid4().hex[:8]
    stream = drift_stream(entry, requests, run_id, INPUT_NAME) if drift else None
    settings = _with_demo_monitor(settings, requests)
    dashboard = start_ray(settings.ray, log_to_driver=False)
    started_ms = int(time.time() * 1000)
    app = await start_app(settings)
    providers = sorted({p for a in app.actors for p in cast("list[str]", a["providers"])})
    labels = ", ".join(str(a["label"]) for a in app.actors)
    console.print(f"ray         dashboard {dashboard}  (actors: {labels})")
    console.print(f"workers     {len(app.actors)} actors on {', '.join(providers)}")
    console.print(f"metrics     {', '.join(app.metrics_urls) or 'off'}")
    if app.targets_file is not None and app.metrics_urls:
        console.print(f"prometheus  file_sd targets in {app.targets_file.resolve()}")
    summary = None
    try:
        payloads = stream.requests if stream else demo_payloads(
            demo_data().x_test, requests, settings.pipeline.default_model, INPUT_NAME, run_id
        )
        board, seconds = await _drive(settings, payloads, run_id, console, timeout_s)
        batch_sizes = [size for d in await app.describe() for size in cast("list[int]", d["batch_sizes"])]
        if stream is not None and app.monitor is not None:
            summary = await _watch_drift(settings, app.monitor, stream, started_ms, console)
    finally:
        await app.stop()
    p = settings.pipeline
    return DemoResult(requests, board, seconds, batch_sizes, p.max_batch_size, p.max_wait_ms, summary)


def _with_demo_monitor(settings: AppSettings, requests: int) -> AppSettings:
    """Windows small enough that a demo-sized stream closes several on each side of the shift,
    and a checkpoint of this run only (the embedded broker starts empty every time)."""
    monitor = settings.monitor.model_copy(
        update={
            "enabled": True,
            "window_rows": max(100, requests // 8),
            "checkpoint_dir": Path(tempfile.mkdtemp(prefix="streaminfer-demo-monitor-")),
        }
    )
    return settings.model_copy(update={"monitor": monitor})


async def _watch_drift(
    settings: AppSettings, monitor, stream: DriftStream, started_ms: int, console: Console
) -> DriftSummary:
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka.bootstrap)
    try:
        await send_all(producer, settings.monitor.topics.labels, stream.labels)
    finally:
        await producer.stop()
    with console.status("monitor catching up (drift detectors, evidently windows, label join)"):
        state = await wait_for_monitor(monitor, len(stream.requests), len(stream.labels))
        events = await read_drift_events(settings, started_ms)
    summary = summarise(stream.shift, events, state)
    for report in summary.reports[:1]:
        console.print(f"evidently   {len(summary.reports)} window reports with drift, e.g. {report}")
    console.print(f"reports     {settings.monitor.reports_dir.resolve()}  (streaminfer drift report --open)")
    return summary


async def _drive(
    settings: AppSettings, payloads: list[Payload], run_id: str, console: Console, timeout_s: float
) -> tuple[Scoreboard, float]:
    requests = len(payloads)
    board = Scoreboard(run_prefix=f"{run_id}-")
    watcher = make_consumer(settings.kafka, settings.topics.predictions, settings.topics.deadletter, group_id=None)
    producer = make_producer(settings.kafka)
    await start_client(watcher, settings.kafka.bootstrap)
    await start_client(producer, settings.kafka.bootstrap)
    progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    sent_task = progress.add_task("produced", total=requests)
    done_task = progress.add_task("answered", total=requests)
    started = time.monotonic()
    try:
        with Live(_view(progress, board), console=console, refresh_per_second=8) as live:
            sender = asyncio.create_task(
                send_all(producer, settings.topics.requests, payloads, lambda n: progress.advance(sent_task, n))
            )
            while board.answered < requests and time.monotonic() - started < timeout_s:
                fetched = await watcher.getmany(timeout_ms=100)
                for tp, records in fetched.items():
                    for record in records:
                        board.observe(record, dead_letter=tp.topic == settings.topics.deadletter)
                progress.update(done_task, completed=board.answered)
                live.update(_view(progress, board))
                if sender.done() and sender.exception():
                    raise sender.exception()  # type: ignore[misc]
            await sender
            elapsed = time.monotonic() - started
    finally:
        await watcher.stop()
        await producer.stop()
    return board, elapsed


def _view(progress: Progress, board: Scoreboard) -> Group:
    table = Table(title="latest", show_edge=False, expand=False)
    table.add_column("request id")
    table.add_column("outcome")
    for request_id, outcome in list(board.recent):
        table.add_row(request_id, outcome)
    return Group(progress, table)
