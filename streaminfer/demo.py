"""`streaminfer demo`: the whole system on one machine, with predictions shown as they arrive."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streaminfer.app import start_app, start_ray
from streaminfer.demo_model import INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import demo_payloads, send_all
from streaminfer.settings import AppSettings
from streaminfer.watch import Scoreboard
from streams.clients import make_consumer, make_producer, start_client
from workers.repository import ModelRepository


@dataclass
class DemoResult:
    requests: int
    board: Scoreboard
    seconds: float
    batch_sizes: list[int]
    max_batch_size: int
    max_wait_ms: float

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
        )


async def run_demo(settings: AppSettings, requests: int, console: Console, timeout_s: float = 300.0) -> DemoResult:
    repository = ModelRepository(settings.model_repository)
    entry = build_demo_model(repository)
    console.print(f"model       {entry.name}/{entry.version} at {entry.directory}")
    dashboard = start_ray(settings.ray, log_to_driver=False)
    app = await start_app(settings)
    providers = sorted({p for a in app.actors for p in a["providers"]})  # type: ignore[union-attr]
    labels = ", ".join(str(a["label"]) for a in app.actors)
    console.print(f"ray         dashboard {dashboard}  (actors: {labels})")
    console.print(f"workers     {len(app.actors)} actors on {', '.join(providers)}")
    console.print(f"metrics     {', '.join(app.metrics_urls) or 'off'}")
    try:
        board, seconds = await _drive(settings, requests, console, timeout_s)
        batch_sizes = [size for d in await app.describe() for size in d["batch_sizes"]]  # type: ignore[union-attr]
    finally:
        await app.stop()
    p = settings.pipeline
    return DemoResult(requests, board, seconds, batch_sizes, p.max_batch_size, p.max_wait_ms)


async def _drive(settings: AppSettings, requests: int, console: Console, timeout_s: float) -> tuple[Scoreboard, float]:
    run_id = uuid.uuid4().hex[:8]
    payloads = demo_payloads(demo_data().x_test, requests, settings.pipeline.default_model, INPUT_NAME, run_id)
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
