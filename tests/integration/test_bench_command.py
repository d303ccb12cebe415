"""`streaminfer bench` end to end with a tiny configuration, on a running broker named with
--bootstrap and a settings file: the passthroughs, streaminfer at defaults, the offered rates from
the load process, memory by process and the report files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

from tests.support.secured_kafka import SecuredKafkaBroker

CLI = [sys.executable, "-m", "streaminfer.cli"]
ROWS = ("batch passthrough, 2 processes (limit B)", "batch passthrough, 1 process", "per-record passthrough",
        "streaminfer (defaults)")


def test_bench_on_tansu_prints_limit_b_the_passthroughs_and_streaminfer_with_added_latency_and_memory(tansu, tmp_path: Path):
    settings = tmp_path / "streaminfer.toml"
    settings.write_text('[kafka]\nclient_id = "bench-test"\n\n[pipeline]\nfetch_max_records = 512\n')
    out = tmp_path / "results"
    command = [*CLI, "--settings", str(settings), "bench", "--bootstrap", tansu.bootstrap, "--runs", "1",
               "--scale", "0.01", "--latency-seconds", "1", "--rates", "500", "--no-peer", "--no-ray-probe",
               "--only", "passthrough,streaminfer (defaults)", "--out", str(out)]
    work = Path(tempfile.mkdtemp(prefix="sib-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        env = {**os.environ, "COLUMNS": "250", "TERM": "dumb", "TMPDIR": str(work)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for row in ROWS:
        assert f"| {row} |" in result.stdout, result.stdout
    assert "could not run" not in result.stdout, result.stdout
    body = json.loads((out / "bench_external.json").read_text())  # a broker of ours, named with --bootstrap
    ours = body["results"]["streaminfer (defaults)"]
    assert ours["lost"] == 0 and ours["throughput"] > 0 and ours["startup_s"] > 0
    assert {"500", "50% limit B"} <= set(ours["latency"])
    assert ours["latency"]["500"]["answered"] == ours["latency"]["500"]["sent"]
    assert body["derived"]["streaminfer (defaults)"]["vs_limit_b"] > 0
    assert body["derived"]["streaminfer (defaults)"]["added"]["500"]["p50_ms"] is not None
    groups = ours["memory_under_load"]["groups"]
    assert {"driver", "consumer actor 1", "consumer actor 2", "Ray: raylet"} <= set(groups)
    limit = body["results"]["batch passthrough, 2 processes (limit B)"]["memory_under_load"]["groups"]
    assert sum(int(g["processes"]) for g in limit.values()) >= 3  # the parent and its two group members
    for name in ("bench_external.md", "bench_external_throughput.png", "bench_external_latency_vs_rate.png",
                 "bench_external_cpu_memory.png"):
        assert (out / name).is_file()


def _command_lines_holding(secret: str, stop: threading.Event, seen: list[str]) -> None:
    while not stop.wait(0.2):
        for process in psutil.process_iter(["cmdline"]):
            line = " ".join(process.info["cmdline"] or ())
            if secret in line:
                seen.append(line)


def test_bench_on_a_secured_apache_kafka_opens_every_client_over_sasl_ssl_and_no_command_line_holds_the_password(
    tmp_path: Path,
):
    broker = SecuredKafkaBroker(tmp_path / "kafka", []).start()
    try:
        settings = tmp_path / "streaminfer.toml"
        settings.write_text(
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
            f'sasl_username = "{broker.admin.name}"\nsasl_password = "{broker.admin.password}"\n'
            f'ssl_ca_file = "{broker.ca.cert}"\n')
        out = tmp_path / "results"
        command = [*CLI, "--settings", str(settings), "bench", "--bootstrap", broker.address("SCRAM"), "--runs", "1",
                   "--scale", "0.01", "--latency-seconds", "1", "--rates", "500", "--no-peer", "--no-ray-probe",
                   "--only", "per-record", "--out", str(out)]
        work = Path(tempfile.mkdtemp(prefix="sib-", dir="/tmp"))
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=_command_lines_holding, args=(broker.admin.password, stop, seen))
        watcher.start()
        try:
            env = {**os.environ, "COLUMNS": "250", "TERM": "dumb", "TMPDIR": str(work)}
            result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
            assert list(work.glob("streaminfer-bench-*/clients.json")) == []  # the secrets' file is gone after the run
            written = [p for p in [*work.rglob("*"), *out.rglob("*")] if p.is_file() and p.name != "clients.json"]
            holding = [p.name for p in written if broker.admin.password.encode() in p.read_bytes()]
        finally:
            stop.set()
            watcher.join()
            shutil.rmtree(work, ignore_errors=True)
    finally:
        broker.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| per-record passthrough |" in result.stdout and "could not run" not in result.stdout, result.stdout
    assert "external: SASL_SSL" in result.stdout
    assert seen == []
    assert broker.admin.password not in result.stdout + result.stderr
    assert written and holding == []
