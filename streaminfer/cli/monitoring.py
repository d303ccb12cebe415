"""Commands of monitoring: the monitor on its own, and drift reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from streaminfer.cli.common import (
    BootstrapOpt,
    RepoOpt,
    StopSignals,
    console,
    exit_if_interrupted,
    friendly_errors,
    load_settings,
    until_signal_or,
)
from streaminfer.settings import AppSettings

drift_app = typer.Typer(no_args_is_help=True, help="Drift reports.")


@friendly_errors
def monitor_command(
    bootstrap: str | None = BootstrapOpt,
    model_repo: Path | None = RepoOpt,
    model: str = typer.Option(None, "--model", "-m", help="Model of requests without a model-name header."),
    metrics_port: int | None = typer.Option(None, help="Prometheus endpoint port (0: any free port)."),
) -> None:
    """Run only the monitor (drift and online accuracy) in this process, until interrupted: for
    deployments that run it apart from `streaminfer run --no-monitor`."""
    settings = load_settings(bootstrap, model_repo, metrics={"port": metrics_port}, pipeline={"default_model": model})
    exit_if_interrupted(asyncio.run(_monitor_until_signal(settings)))


async def _monitor_until_signal(settings: AppSettings) -> bool:
    from prometheus_client import CollectorRegistry

    from streaminfer.monitoring.observability.endpoint import stop_serving
    from streaminfer.monitoring.observability.metrics import MonitorMetrics
    from streaminfer.running import serve_configured_metrics
    from streaminfer.streams.clients import check_reachable
    from streaminfer.streams.monitor import Monitor
    from streaminfer.workers.models.repository import ModelRepository

    signals = StopSignals()  # a Ctrl-C while starting stops the command once it is up
    await check_reachable(settings.kafka)
    registry = CollectorRegistry()
    server, url = serve_configured_metrics(settings, registry)
    monitor = Monitor(
        settings.kafka, settings.topics, settings.monitor, ModelRepository(settings.model_repository),
        settings.pipeline.default_model, MonitorMetrics(registry),
    )
    await monitor.start()
    console.print(f"metrics:  {url or 'off'}")
    console.print(f"watching {settings.topics.requests}, {settings.topics.predictions} and "
                  f"{settings.monitor.topics.labels}; events to {settings.monitor.topics.drift} and "
                  f"{settings.monitor.topics.metrics}; reports in {settings.monitor.reports_dir} (Ctrl-C to stop)")

    async def cleanup() -> None:
        await monitor.stop()
        stop_serving(server)

    return await until_signal_or(monitor.wait(), cleanup, signals)


@drift_app.command("report")
@friendly_errors
def drift_report(
    bootstrap: str | None = BootstrapOpt,
    model_repo: Path | None = RepoOpt,
    model: str | None = typer.Option(None, "--model", "-m", help="Model whose requests to test (default: settings)."),
    rows: int = typer.Option(500, min=20, help="With --bootstrap: test the newest this many requests."),
    open_report: bool = typer.Option(False, "--open", help="Open the report in a browser."),
) -> None:
    """Show the newest evidently window report the monitor wrote; with --bootstrap, write a new
    one now from the newest requests on the topic against the model's training reference."""
    from streaminfer.monitoring.drift.windows import latest_report
    from streaminfer.reports.drift import report_from_topic

    settings = load_settings(bootstrap, model_repo)
    path: Path | None
    if bootstrap is not None:
        path, drifted = asyncio.run(report_from_topic(settings, model or settings.pipeline.default_model, rows))
        console.print(f"drifted features: {', '.join(drifted) or 'none'}")
    else:
        path = latest_report(settings.monitor.reports_dir)
        if path is None:
            from streaminfer.errors import NothingToReport

            raise NothingToReport(
                f"no report in {settings.monitor.reports_dir}: run the monitor (streaminfer run or demo --drift), "
                "or pass --bootstrap to test the newest requests now"
            )
    console.print(f"report: {path.resolve()}")
    if open_report:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())

