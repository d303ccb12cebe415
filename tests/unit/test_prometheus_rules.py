"""Prometheus rules, config and Grafana dashboard, checked with promtool and against our metrics.

Why: alerts and dashboards fail silently. A renamed metric, a typo in PromQL or a threshold
that never trips shows up only during the incident it was meant to catch. promtool parses and
unit-tests the rules (infra/prometheus/alerts.test.yml); the catalogue tests tie every
``streaminfer_*`` name in the rules and the dashboard to monitoring/observability/metrics.py.

promtool comes with Debian's ``prometheus`` package, which CI installs (.ci/run): without it these
tests fail rather than skip, so a missing tool never passes for green.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import (
    ActorMetrics,
    ExperimentMetrics,
    FeatureSinkMetrics,
    MirrorMetrics,
    MonitorMetrics,
    PipelineMetrics,
    RegistryBridgeMetrics,
)
from streaminfer.scaling.metrics import ScalingMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "infra" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO_ROOT / "infra" / "grafana" / "streaminfer-dashboard.json"
TARGETS_GLOB = "/etc/prometheus/targets/*.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# Series names a metric family of each type exposes (a counter family "x" is scraped as x_total).
_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_GRAFANA_RANGES = re.compile(r"\$\{?(__rate_interval|__interval|__range)\b\}?")
_NO_PROMTOOL = (
    "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
)


def _promtool(*args: str) -> str:
    """Run promtool; a missing promtool fails the calling test (never a skip: CI installs it)."""
    promtool = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None
    )
    if promtool is None:
        pytest.fail(_NO_PROMTOOL)
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _metric_names(expr: str) -> set[str]:
    """``streaminfer_*`` series and recording-rule names in a PromQL expression (not in strings)."""
    without_strings = _STRING_LITERAL.sub('""', expr)
    return {name for name in _IDENTIFIER.findall(without_strings) if "streaminfer_" in name}


def _catalogue() -> set[str]:
    """Every series name the project's metric classes can expose."""
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    ActorMetrics(registry)
    MonitorMetrics(registry)
    ExperimentMetrics(registry)
    FeatureSinkMetrics(registry)
    ScalingMetrics(registry)
    RegistryBridgeMetrics(registry)
    MirrorMetrics(registry)
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in _SERIES_SUFFIXES[family.type]
    }


def _recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


# --- promtool ----------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    output = _promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in output


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    output = _promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in output


def test_prometheus_config_passes_promtool_check_with_its_paths_resolved(tmp_path: Path) -> None:
    """The compose paths (/etc/prometheus/...) moved to real ones, so promtool also checks the
    rule file and a targets file shaped like the one the app writes."""
    config = yaml.safe_load(CONFIG.read_text())
    config["rule_files"] = [str((CONFIG.parent / path).resolve()) for path in config["rule_files"]]
    targets_dir = tmp_path / "targets"
    targets_dir.mkdir()
    (targets_dir / "streaminfer.json").write_text(
        json.dumps(
            [
                {
                    "targets": ["127.0.0.1:40001"],
                    "labels": {
                        "job": "streaminfer",
                        "component": "consumer",
                        "instance": "consumer-0",
                    },
                }
            ]
        )
    )
    for job in config["scrape_configs"]:
        for discovery in job.get("file_sd_configs", []):
            discovery["files"] = [str(targets_dir / Path(path).name) for path in discovery["files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))

    output = _promtool("check", "config", str(copy))

    assert "WARNING" not in output, output  # e.g. a rule or targets file that does not exist
    assert "1 rule files found" in output


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, checked as a recording rule's expression."""
    queries = [
        _GRAFANA_RANGES.sub("5m", query).replace("$model", ".*")
        for query in _dashboard_queries(_dashboard())
    ]
    assert "$" not in "".join(queries), "a Grafana variable this test does not fill in"
    rules = [{"record": f"dashboard:query_{index}", "expr": q} for index, q in enumerate(queries)]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    output = _promtool("check", "rules", str(rules_file))

    assert f"SUCCESS: {len(queries)} rules found" in output


# --- prometheus.yml ----------------------------------------------------------------------------


def test_prometheus_config_loads_the_alert_rules_next_to_it() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert [(CONFIG.parent / path).resolve() for path in config["rule_files"]] == [ALERTS]


def test_prometheus_config_discovers_the_targets_file_the_app_writes() -> None:
    jobs = {job["job_name"]: job for job in yaml.safe_load(CONFIG.read_text())["scrape_configs"]}
    (discovery,) = jobs["streaminfer"]["file_sd_configs"]
    assert discovery["files"] == [TARGETS_GLOB]
    assert discovery["refresh_interval"] == "5s"
    assert jobs["streaminfer-pipeline"]["static_configs"] == [{"targets": ["pipeline:9400"]}]


# --- alerts.yml --------------------------------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 9
    for alert in alerts:
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]


def test_every_metric_in_the_alert_rules_is_exported_or_recorded() -> None:
    used = set().union(*(_metric_names(rule["expr"]) for rule in _rules()))
    assert {"streaminfer_requests_total", "streaminfer_drift_events_total"} <= used

    unknown = used - _catalogue() - _recorded_names()

    assert not unknown, f"neither in monitoring/observability/metrics.py nor recorded: {sorted(unknown)}"


def test_every_metric_in_the_dashboard_is_exported() -> None:
    dashboard = _dashboard()
    variables = [v.get("definition", "") for v in dashboard["templating"]["list"]]
    used = set().union(*(_metric_names(q) for q in _dashboard_queries(dashboard) + variables))
    assert "streaminfer_end_to_end_latency_seconds_bucket" in used

    unknown = used - _catalogue() - _recorded_names()

    assert not unknown, f"not in monitoring/observability/metrics.py: {sorted(unknown)}"


def test_a_histogram_or_counter_family_name_alone_is_not_a_series() -> None:
    catalogue = _catalogue()
    assert "streaminfer_requests_total" in catalogue
    assert "streaminfer_batch_size_bucket" in catalogue
    assert "streaminfer_requests" not in catalogue
    assert "streaminfer_batch_size" not in catalogue


# --- Grafana dashboard -------------------------------------------------------------------------


def test_dashboard_queries_go_through_the_ds_prometheus_input() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] == 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_dashboard_filters_by_a_model_variable_from_the_request_counter() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    model = variables["model"]
    assert model["definition"] == "label_values(streaminfer_requests_total, model)"
    assert model["datasource"] == DATASOURCE
    filtered = [q for q in _dashboard_queries(_dashboard()) if 'model=~"$model"' in q]
    assert len(filtered) >= 10
