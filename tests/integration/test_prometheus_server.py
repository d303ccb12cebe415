"""The test Prometheus (tests/support/prometheus.py) scrapes the targets in a file_sd file.

Why: integration tests of the app's metrics rely on this helper; if it cannot see a plain
prometheus_client endpoint, their failures would say nothing about the app.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.integration


def test_counter_in_a_file_sd_target_is_scraped_under_its_total_name(tmp_path: Path) -> None:
    if prometheus_binary() is None:
        pytest.fail("install Debian's prometheus package (apt-get install prometheus)")
    registry = CollectorRegistry()
    Counter("demo_things", "Things done.", registry=registry).inc(7)
    exporter, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    targets_file = tmp_path / "targets" / "streaminfer.json"
    targets_file.parent.mkdir()
    target = f"127.0.0.1:{exporter.server_port}"
    targets_file.write_text(
        json.dumps([{"targets": [target], "labels": {"job": "streaminfer", "component": "driver"}}])
    )
    try:
        with PrometheusServer(tmp_path / "prometheus", targets_file) as prometheus:
            assert prometheus.wait_for_value("sum(demo_things_total)", 7, timeout_s=30) == 7
            (active,) = prometheus.targets()["activeTargets"]
            assert active["labels"]["instance"] == target
            assert active["labels"]["component"] == "driver"
            assert active["health"] == "up"
    finally:
        exporter.shutdown()
        exporter.server_close()
