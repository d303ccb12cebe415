"""The prediction cache and the cost report on a real run: a broker, consumer actors on Ray with
ONNX Runtime sessions, and a real Prometheus scraping them through the driver's targets file.

Why: the cache must show where clients and operators look (the ``cached`` header on the
predictions topic, the hit counter in Prometheus), and ``streaminfer cost report`` must read what
the consumers really recorded, not what a unit test assumes they would.
"""

from __future__ import annotations

import asyncio
import csv
import shutil

import msgspec
import numpy as np
import pytest
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.demo.model import DEMO_MODEL, DEMO_VERSION, INPUT_NAME, demo_data
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction, request_body
from streaminfer.workers.models.caching import CachePolicy
from streaminfer.workers.models.repository import ModelRepository
from tests.support.harness import Collector, app_settings, send, started
from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.integration

UNIQUE = 120


def cached_repository(source: ModelRepository, root) -> ModelRepository:
    """The demo model, declared deterministic and cached."""
    repository = ModelRepository(root)
    shutil.copytree(source.root / DEMO_MODEL / DEMO_VERSION, root / DEMO_MODEL / DEMO_VERSION)
    metadata = source.resolve(DEMO_MODEL).metadata
    repository.save_metadata(msgspec.structs.replace(metadata, deterministic=True, cache=CachePolicy(ttl_s=600)))
    return repository


def records(rows: np.ndarray, prefix: str) -> list:
    """One request per row; a row's key is the same in every round, so a repeat reaches the
    consumer (partition) that answered the row first."""
    out = []
    for n, row in enumerate(rows):
        request_id = f"{prefix}-{n}"
        out.append((f"row-{n}".encode(), request_body(request_id, INPUT_NAME, row[np.newaxis, :]),
                    [(h.MODEL_NAME, DEMO_MODEL.encode()), (h.REQUEST_ID, request_id.encode())]))
    return out


async def eventually(probe, expected: float, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await asyncio.to_thread(probe)
        if value == expected:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"expected {expected}, last value {value}")


async def test_repeated_inputs_are_answered_from_the_cache_and_the_cost_report_reads_the_run(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path
):
    if prometheus_binary() is None:
        pytest.fail("install Debian's prometheus package (apt-get install prometheus)")
    rows = np.unique(demo_data().x_test, axis=0)[:UNIQUE]
    assert len(rows) == UNIQUE
    repository = cached_repository(model_repo, tmp_path / "models")
    targets = tmp_path / "targets" / "streaminfer.json"
    settings = app_settings(kafka_settings, topics, repository, metrics={"port": 0, "targets_file": targets})

    with PrometheusServer(tmp_path / "prometheus", targets) as prometheus:
        app = await started(settings)
        try:
            async with Collector(kafka_settings.bootstrap, topics) as collector:
                await eventually(lambda: prometheus.value('count(up{component="consumer"} == 1)'), 2)
                await send(kafka_settings.bootstrap, topics.requests, records(rows, "first"))
                await collector.until(lambda c: c.total >= UNIQUE)
                await send(kafka_settings.bootstrap, topics.requests, records(rows, "again"))
                collected = await collector.until(lambda c: c.total >= 2 * UNIQUE)

            await eventually(lambda: prometheus.value("sum(streaminfer_prediction_cache_hits_total)"), UNIQUE)
            await eventually(lambda: prometheus.value("sum(streaminfer_prediction_cache_misses_total)"), UNIQUE)
            await eventually(lambda: prometheus.value("sum(streaminfer_cost_answers_total)"), 2 * UNIQUE)
            # increase() extrapolates to the range's end by up to a scrape interval: with 12 samples
            # after the counters started at 0, that is under a tenth of the true count
            await eventually(lambda: prometheus.value("min(count_over_time(streaminfer_cost_answers_total[5m])) >= bool 12"), 1)
            spent = await asyncio.to_thread(prometheus.value, "sum(streaminfer_cost_spend_total)")
            report = await asyncio.to_thread(
                CliRunner().invoke, cli,
                ["cost", "report", "--prometheus", prometheus.url, "--since", "5m", "--step", "15s",
                 "--out", str(tmp_path / "cost.png"), "--csv", str(tmp_path / "cost.csv")],
            )
        finally:
            await app.stop()

    assert collected.dead_letters == []
    by_id = {decode_prediction(r.value).id: r for r in collected.predictions}
    assert set(by_id) == {f"{p}-{n}" for p in ("first", "again") for n in range(UNIQUE)}
    for n in range(UNIQUE):
        first, again = by_id[f"first-{n}"], by_id[f"again-{n}"]
        assert dict(again.headers).get(h.CACHED) == b"true" and h.CACHED not in dict(first.headers)
        assert decode_prediction(again.value).outputs == decode_prediction(first.value).outputs

    assert spent is not None and spent > 0
    assert report.exit_code == 0, report.output
    (row,) = list(csv.DictReader((tmp_path / "cost.csv").open()))
    assert (row["model"], row["version"]) == (DEMO_MODEL, DEMO_VERSION)
    assert 2 * UNIQUE <= float(row["answers"]) <= 2 * UNIQUE * 1.1
    assert float(row["consumer_cpu_s_per_1k"]) > 0 and float(row["inference_cpu_s_per_1k"]) > 0
    assert float(row["gpu_s_per_1k"]) == 0  # CPU sessions only here
    assert spent <= float(row["spend"]) <= spent * 1.1
    assert "USD" in report.output and "plot:" in report.output
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(report.output, (tmp_path / "cost.csv").read_text(), sep="\n")
