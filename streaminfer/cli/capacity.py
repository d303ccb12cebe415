"""``streaminfer capacity``: the scaling model's answers/s, bottleneck and cost for a layout."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from enum import Enum

import typer
from rich.table import Table

from streaminfer.capacity import MODELS, REMEDY, Layout, measured_rates, predict
from streaminfer.cli.common import console, friendly_errors, load_settings

Model = Enum("Model", {name: name for name in MODELS}, type=str)  # type: ignore[misc]


@friendly_errors
def capacity_command(
    partitions: int | None = typer.Option(None, "--partitions", min=1, help="Partitions of the requests topic (default: settings)."),
    nodes: int = typer.Option(1, "--nodes", min=1, help="Ray nodes running consumer actors."),
    cores: float | None = typer.Option(None, "--cores", min=0.1, help="Cores per node (default: this machine's)."),
    gpus: int = typer.Option(0, "--gpus", min=0, help="GPUs in all; inference runs on them, the Kafka hop on the cores."),
    broker_cores: float | None = typer.Option(
        None, "--broker-cores", min=0.1, help="Cores the brokers have to themselves (default: the broker shares the nodes' cores)."),
    model: Model = typer.Option("breast-cancer", "--model", help="Whose measured inference cost to use."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Rows per batch on a GPU (default: pipeline.max_batch_size)."),
    client_us: float | None = typer.Option(None, "--client-us", min=0.001, help="Consumer CPU-µs per answer besides inference (default: measured here)."),
    inference_us: float | None = typer.Option(None, "--inference-us", min=0, help="Inference CPU-µs per row on a CPU (default: measured here)."),
    broker_us: float | None = typer.Option(None, "--broker-us", min=0.001, help="Broker CPU-µs per answer (default: measured here)."),
    gpu_rows_per_s: float | None = typer.Option(None, "--gpu-rows-per-s", min=1, help="Rows/s one GPU runs (default: H100, measured)."),
) -> None:
    """Predict answers/s and cost per 1,000 answers for a layout, and name the bottleneck (client
    CPU, partitions, broker or GPU), from the figures measured on this project's machine."""
    settings = load_settings()
    rates = measured_rates(model.value, batch or settings.pipeline.max_batch_size)
    rates = replace(
        rates,
        client_cpu_s=rates.client_cpu_s if client_us is None else client_us / 1e6,
        inference_cpu_s=rates.inference_cpu_s if inference_us is None else inference_us / 1e6,
        broker_cpu_s=rates.broker_cpu_s if broker_us is None else broker_us / 1e6,
        gpu_rows_per_s=rates.gpu_rows_per_s if gpu_rows_per_s is None else gpu_rows_per_s,
    )
    layout = Layout(partitions or settings.topics.partitions, nodes, cores or float(os.cpu_count() or 1), gpus,
                    broker_cores, settings.pool.actor_num_cpus)
    prices = settings.pipeline.cost
    prediction = predict(layout, rates, prices)
    console.print(f"{layout.partitions} partitions, {nodes} node(s) × {layout.cores_per_node:g} cores, {gpus} GPU(s), broker on "
                  + ("the nodes' cores" if broker_cores is None else f"{broker_cores:g} cores of its own") + f", model {model.value}")
    table = Table("bound", "answers/s")
    for bottleneck, rate in prediction.bounds.items():
        mark = " ◀" if bottleneck is prediction.bottleneck else ""
        table.add_row(f"{bottleneck.value}{mark}", f"{rate:,.0f}")
    console.print(table)
    console.print(f"consumer actors: {prediction.consumers}   CPU-µs per answer: consumer "
                  f"{rates.consumer_cpu_s(gpus > 0) * 1e6:.1f}, broker {rates.broker_cpu_s * 1e6:.1f}"
                  + (f"   GPU rows/s each: {rates.gpu_rows_per_s:,.0f}" if gpus else ""))
    console.print(f"throughput: [bold]{prediction.answers_per_s:,.0f} answers/s[/bold], bottleneck: "
                  f"[bold]{prediction.bottleneck.value}[/bold] (for more: {REMEDY[prediction.bottleneck]})")
    per_million = "n/a" if math.isnan(prediction.cost_per_1000) else f"{prediction.cost_per_1000 * 1000:.4g}"
    console.print(f"cost: {prediction.cost_per_hour:.4g} {prices.currency} per hour, {per_million} {prices.currency} "
                  f"per million answers at that rate ({prices.core_hour_price:g} per core-hour, {prices.gpu_hour_price:g} per GPU-hour)")
