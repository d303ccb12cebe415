"""The `streaminfer` command line. Each command builds settings, then hands off to one module."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from aiokafka.errors import KafkaError
from rich.progress import Progress

from streaminfer.cli.acls import acls_command
from streaminfer.cli.alerts import alerts_app
from streaminfer.cli.audit import audit_app
from streaminfer.cli.capacity import capacity_command
from streaminfer.cli.common import (
    BootstrapOpt,
    RepoOpt,
    StopSignals,
    console,
    err_console,
    exit_if_interrupted,
    friendly_errors,
    load_settings,
    until_signal_or,
)
from streaminfer.cli.cost import cost_app
from streaminfer.cli.deadletters import deadletters_app
from streaminfer.cli.experiments import experiments_app
from streaminfer.cli.features import features_app
from streaminfer.cli.models import models_app
from streaminfer.cli.monitoring import drift_app, monitor_command
from streaminfer.cli.topics import topics_app
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.settings import SETTINGS_FILE_VARIABLE, AppSettings
from streaminfer.streams.security.authorization import refused_as

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming inference on Kafka with Ray and ONNX Runtime.")
app.add_typer(models_app, name="models")
@app.callback()
def configure_logging(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show client library logs."),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="TOML file of settings (e.g. [kafka] with the SASL password); the environment wins over it.",
    ),
) -> None:
    """Client libraries log connection failures that we report ourselves, in one line; keep
    their logs for --verbose."""
    if settings_file is not None:
        os.environ[SETTINGS_FILE_VARIABLE] = str(settings_file)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)



@app.command()
@friendly_errors
def broker(
    port: int = typer.Option(9092, help="Loopback port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface (keep it loopback: no authentication)."),
) -> None:
    """Start the embedded Kafka-protocol broker (Tansu, in memory) until interrupted."""
    from streaminfer.broker import EmbeddedBroker

    # SIGTERM (systemd, docker stop, kill) must stop the broker too, not only Ctrl-C: without a
    # handler Python dies at once and leaves the broker holding the port.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # and SIGINT even when started from a process that ignores it (a parent's SIG_IGN is inherited,
    # and Python then leaves Ctrl-C ignored): seen under the test suite after the fault tests
    signal.signal(signal.SIGINT, signal.default_int_handler)
    embedded = EmbeddedBroker(port=port, host=host, die_with_parent=True).start()
    console.print(f"embedded broker listening; bootstrap: [bold]{embedded.bootstrap}[/bold]  (Ctrl-C to stop)")
    try:
        embedded.wait()
    finally:
        embedded.stop()


@app.command()
@friendly_errors
def run(
    bootstrap: str | None = BootstrapOpt,
    model_repo: Path | None = RepoOpt,
    model: list[str] = typer.Option([], "--model", "-m", help="Model to serve (repeat for several); first is the default."),
    pool_size: int | None = typer.Option(None, help="Actors per model (with --consumers 0)."),
    consumers: int | None = typer.Option(None, help="Consuming actors (0: consume here, infer on the worker pool)."),
    ray_address: str | None = typer.Option(None, help="Join this Ray cluster instead of starting one."),
    metrics_port: int | None = typer.Option(None, help="Prometheus endpoint port (0: any free port)."),
    group_id: str | None = typer.Option(None, help="Kafka consumer group."),
    monitor: bool | None = typer.Option(None, "--monitor/--no-monitor", help="Start the drift and accuracy monitor (default: on)."),
    alerts: Path | None = typer.Option(None, "--alerts", help="Alerting rules file: also run alerting (an actor of its own)."),
    experiments: bool | None = typer.Option(
        None, "--experiments/--no-experiments", help="Start the experiment controller that gates canaries (default: on)."),
    autoscale: bool | None = typer.Option(
        None, "--autoscale/--no-autoscale", help="Add consumer actors when the group lags, drain them when it is idle."),
    min_consumers: int | None = typer.Option(None, min=1, help="Fewest consumer actors with --autoscale."),
    max_consumers: int | None = typer.Option(None, min=1, help="Most consumer actors with --autoscale."),
) -> None:
    """Run the pipeline against any Kafka until interrupted."""
    settings = load_settings(
        bootstrap, model_repo,
        kafka={"group_id": group_id}, pool={"size": pool_size}, ray={"address": ray_address},
        pipeline={"consumers": consumers},
        metrics={"port": metrics_port}, monitor={"enabled": monitor}, alerting={"rules_file": alerts},
        experiments={"enabled": experiments},
        scaling={"enabled": autoscale, "min_consumers": min_consumers, "max_consumers": max_consumers},
    )
    if settings.scaling.enabled:
        ScalingSettings.model_validate(settings.scaling.model_dump())  # flags are copied in unvalidated
        if settings.pipeline.consumers == 0:
            raise typer.BadParameter("--autoscale scales consumer actors: give --consumers 1 or more")
    if model:
        settings = settings.model_copy(
            update={"models": model[1:], "pipeline": settings.pipeline.model_copy(update={"default_model": model[0]})}
        )
    exit_if_interrupted(asyncio.run(_run_until_signal(settings)))


def print_scrape_targets(running: Any) -> None:
    """Where Prometheus finds every process: the file_sd file, and the endpoints it lists now."""
    console.print(f"metrics:       {', '.join(running.metrics_urls) or 'off'}")
    if running.targets_file is not None and running.metrics_urls:
        console.print(f"prometheus:    file_sd targets in {running.targets_file.resolve()} "
                      "(infra/prometheus/prometheus.yml reads them)")


async def _run_until_signal(settings: AppSettings) -> bool:
    from streaminfer.app import start_app, start_ray
    from streaminfer.streams.clients import check_reachable
    from streaminfer.workers.models.repository import ModelRepository

    signals = StopSignals()  # a Ctrl-C while starting stops `run` once it is up
    await check_reachable(settings.kafka)
    if settings.pipeline.guarantee == "exactly_once":
        from streaminfer.streams.clients import KafkaClients
        from streaminfer.streams.pipeline.transactional import check_transactions

        await check_transactions(KafkaClients(settings.kafka))  # the embedded broker: refused before Ray starts
    for name in settings.served_model_names():
        ModelRepository(settings.model_repository).resolve(name)  # fail before starting Ray
    dashboard = start_ray(settings.ray)
    running = await start_app(settings)
    console.print(f"ray dashboard: {dashboard}")
    print_scrape_targets(running)
    console.print(f"serving {', '.join(settings.served_model_names())} with actors "
                  f"{', '.join(str(a['label']) for a in running.actors)}")
    if settings.scaling.enabled:
        console.print(f"autoscaling:   {settings.scaling.min_consumers} to {settings.scaling.max_consumers} consumer "
                      "actors on the group's lag (decisions in streaminfer_scaling_decisions_total)")
    console.print(f"consuming {settings.topics.requests} on {settings.kafka.bootstrap} (Ctrl-C to stop)")
    if signals.received.is_set():
        console.print("stopping: interrupted while starting")
    return await until_signal_or(running.wait(), running.stop, signals)



@app.command()
@friendly_errors
def produce(
    bootstrap: str | None = BootstrapOpt,
    file: Path | None = typer.Option(None, "--file", "-f", exists=True, dir_okay=False, help="JSON-lines file, one OIP request per line."),
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Send N requests from the demo dataset."),
    model: str = typer.Option("breast-cancer", help="Value of the model-name header."),
    topic: str | None = typer.Option(None, help="Requests topic (default: settings)."),
) -> None:
    """Send requests from a file or from the demo dataset, with a progress bar."""
    if (file is None) == (count is None):
        raise typer.BadParameter("give exactly one of --file or --count")
    from streaminfer.demo.model import INPUT_NAME, demo_data
    from streaminfer.loadgen import demo_payloads, file_payloads

    settings = load_settings(bootstrap)
    payloads = file_payloads(file, model) if file else demo_payloads(demo_data().x_test, count or 0, model, INPUT_NAME)
    sent = asyncio.run(_produce(settings, topic or settings.topics.requests, payloads))
    console.print(f"sent {sent} requests to {topic or settings.topics.requests} on {settings.kafka.bootstrap}")


async def _produce(settings: AppSettings, topic: str, payloads: list) -> int:
    from streaminfer.loadgen import send_all
    from streaminfer.streams.clients import check_reachable, make_producer, start_client

    await check_reachable(settings.kafka)
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka.bootstrap)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("producing", total=len(payloads))
            return await send_all(producer, topic, payloads, lambda n: progress.advance(task, n))
    except KafkaError as exc:  # a missing ACL becomes the one line that names it
        raise refused_as(exc, reads=[], writes=[topic], settings=settings.kafka) from exc
    finally:
        await producer.stop()


@app.command()
@friendly_errors
def tail(
    bootstrap: str | None = BootstrapOpt,
    dead_letters: bool = typer.Option(False, "--dead-letters", help="Follow the dead-letter topic instead."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    limit: int | None = typer.Option(None, help="Stop after this many records."),
) -> None:
    """Print predictions (or dead letters) as they arrive."""
    settings = load_settings(bootstrap)
    asyncio.run(_tail(settings, dead_letters, from_beginning, limit))


async def _tail(settings: AppSettings, dead_letters: bool, from_beginning: bool, limit: int | None) -> None:
    import json

    from streaminfer.schemas.deadletter import read_error_headers
    from streaminfer.streams.clients import KafkaClients, check_reachable, start_client

    await check_reachable(settings.kafka)
    topic = settings.topics.deadletter if dead_letters else settings.topics.predictions
    # the settings' security and isolation level (read_committed with pipeline.guarantee=exactly_once)
    consumer = KafkaClients(settings.kafka).consumer(
        topic, group_id=None, auto_offset_reset="earliest" if from_beginning else "latest", fetch_max_wait_ms=50,
    )
    shown = 0
    try:
        await start_client(consumer, settings.kafka.bootstrap)
        async for record in consumer:
            if dead_letters:
                meta = read_error_headers(record.headers)
                print(json.dumps({**meta, "value": (record.value or b"").decode("utf-8", "replace")}), flush=True)
            else:
                print((record.value or b"").decode(), flush=True)
            shown += 1
            if limit is not None and shown >= limit:
                return
    except KafkaError as exc:  # a missing ACL becomes the one line that names it
        raise refused_as(exc, reads=[topic], writes=[], settings=settings.kafka) from exc
    finally:
        await consumer.stop()


@app.command()
@friendly_errors
def demo(
    requests: int = typer.Option(2000, "--requests", "-n", min=1, help="Requests to send."),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", help="Use this Kafka instead of the embedded broker."),
    model_repo: Path | None = RepoOpt,
    pool_size: int | None = typer.Option(None, help="Actors per model (with --consumers 0)."),
    consumers: int | None = typer.Option(None, help="Consuming actors (0: consume here, infer on the worker pool)."),
    max_batch_size: int | None = typer.Option(None, help="Most rows per inference batch."),
    max_wait_ms: float | None = typer.Option(None, help="Longest wait for a batch to fill."),
    timeout: float = typer.Option(300, help="Give up after this many seconds."),
    drift: bool = typer.Option(False, "--drift", help="Shift three features half-way through and show drift firing."),
) -> None:
    """Start a broker, Ray and the pipeline, send N requests, and show predictions flowing."""
    from streaminfer.broker import EmbeddedBroker
    from streaminfer.demo.run import run_demo

    settings = load_settings(
        bootstrap, model_repo, pool={"size": pool_size}, metrics={"port": 0},
        pipeline={"consumers": consumers, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms},
    )
    embedded = None
    if bootstrap is None:
        embedded = EmbeddedBroker().start()
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap": embedded.bootstrap})})
        console.print(f"broker      embedded Tansu at {embedded.bootstrap}")
    try:
        result = asyncio.run(run_demo(settings, requests, console, timeout, drift=drift))
    finally:
        if embedded is not None:
            embedded.stop()
    console.print()
    if result.drift is not None:
        console.print(result.drift.table())
    console.print(result.summary(), highlight=False, soft_wrap=True)
    if not result.complete:
        err_console.print(f"error: only {result.board.answered} of {requests} requests were answered within {timeout:.0f} s")
        raise typer.Exit(1)


@app.command()
@friendly_errors
def bench(
    out: Path = typer.Option(Path("tests/benchmarks/results"), help="Where the JSON, markdown and PNGs go."),
    runs: int = typer.Option(3, min=1, help="Runs per system; figures are medians."),
    scale: float = typer.Option(1.0, min=0.01, help="Scale the message counts (0.1 for a quick look)."),
    latency_seconds: float = typer.Option(5.0, min=1, help="Length of each fixed-rate load step."),
    peer: bool = typer.Option(True, help="Include Seldon MLServer in Kafka mode (installs it in its own venv)."),
    only: str | None = typer.Option(None, help="Run only systems whose name contains this (comma-separated: any of these)."),
    broker: str = typer.Option(
        "both", help="tansu (embedded), kafka (Apache Kafka from Maven jars) or both, a report each.", case_sensitive=False),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", "-b", help="Use this running broker (with the settings' TLS and SASL) instead of starting one.",
    ),
    ray_probe: bool = typer.Option(True, help="Also measure a bare local Ray's memory, with and without its dashboard."),
    rates: str = typer.Option("1000,5000,10000", help="Fixed rates (msg/s) every system is offered, besides 50% of limit B."),
) -> None:
    """Benchmark streaminfer against ONNX Runtime alone, the best passthrough, hand-rolled consumers
    and MLServer, side by side on one broker (every client from the settings: --settings FILE)."""
    run_bench = _checkout_bench()
    if broker not in ("tansu", "kafka", "both"):
        raise typer.BadParameter("--broker must be tansu, kafka or both")
    try:
        fixed_rates = tuple(float(rate) for rate in rates.split(",") if rate.strip())
    except ValueError:
        raise typer.BadParameter("--rates takes msg/s separated by commas, e.g. 1000,5000") from None
    settings = load_settings()
    written = run_bench(out, runs, scale, latency_seconds, peer, console, only, broker, settings, bootstrap,
                        ray_probe, fixed_rates)
    for path in written:
        console.print(f"wrote {path}")
    for table in (path for path in written if path.suffix == ".md"):
        console.print(table.read_text(), highlight=False, soft_wrap=True)


def _checkout_bench():
    """The benchmark ships with the source, not the wheel (it builds peers' venvs and starts
    Apache Kafka from Maven jars): find it in the checkout this package was installed from."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "bench" / "main.py").is_file():
        err_console.print(
            "[red]error:[/red] streaminfer bench runs from a source checkout (git clone, then "
            f"pip install -e .); there is no bench/ beside {checkout / 'streaminfer'}", highlight=False, soft_wrap=True,
        )
        raise typer.Exit(2)
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from bench.main import main

    return main




app.add_typer(drift_app, name="drift")
app.add_typer(alerts_app, name="alerts")
app.add_typer(features_app, name="features")
app.add_typer(experiments_app, name="experiments")
app.add_typer(topics_app, name="topics")
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(cost_app, name="cost")
app.add_typer(audit_app, name="audit")
app.command("acls")(acls_command)
app.command("capacity")(capacity_command)
app.command("monitor")(monitor_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
