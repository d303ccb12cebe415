"""The errors a newcomer meets print one line that says what to do, and exit non-zero."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from streaminfer.broker import free_port

CLI = [sys.executable, "-m", "streaminfer.cli"]


def streaminfer(*args: str, timeout: float = 120, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_run_against_an_unreachable_broker_says_how_to_start_one(model_repo):
    result = streaminfer("run", "--bootstrap", f"127.0.0.1:{free_port()}", "--model-repo", str(model_repo.root))
    assert_one_line_error(result, "cannot reach Kafka", "streaminfer broker")


def test_run_with_an_unknown_model_names_the_known_ones(tansu, model_repo):
    result = streaminfer("run", "--bootstrap", tansu.bootstrap, "--model", "no-such-model", "--model-repo", str(model_repo.root))
    assert_one_line_error(result, "no-such-model", "breast-cancer")


def test_run_with_a_missing_model_file_says_how_to_rebuild_it(tansu, tmp_path):
    version_dir = tmp_path / "breast-cancer" / "1.0.0"
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").write_text('{"name": "breast-cancer", "version": "1.0.0", "signature": {"inputs": [], "outputs": []}}')
    result = streaminfer("run", "--bootstrap", tansu.bootstrap, "--model-repo", str(tmp_path))
    assert_one_line_error(result, "model.onnx is missing", "build-demo")


def test_run_asking_for_a_gpu_on_a_cluster_without_one_says_so_instead_of_waiting_forever(tansu, model_repo):
    env = {"STREAMINFER_POOL__ACTOR_NUM_GPUS": "0.5", "STREAMINFER_POOL__PLACEMENT_TIMEOUT_S": "5",
           "STREAMINFER_METRICS__PORT": "0"}
    result = streaminfer("run", "--bootstrap", tansu.bootstrap, "--model-repo", str(model_repo.root), "--no-monitor",
                         "--no-experiments", env=env, timeout=180)
    assert_one_line_error(result, "each reserves 0.5 CPU, 0.5 GPU", "0 GPU in all", "POOL__ACTOR_NUM_GPUS")
    assert result.returncode == 2


def test_run_with_a_ray_address_where_no_cluster_listens_says_so_at_once(tansu, model_repo):
    address = f"127.0.0.1:{free_port()}"
    result = streaminfer("run", "--bootstrap", tansu.bootstrap, "--model-repo", str(model_repo.root),
                         "--ray-address", address, timeout=60)
    assert_one_line_error(result, f"cannot join the Ray cluster at {address}", "ray start --head")
    assert result.returncode == 2


def test_broker_on_a_port_in_use_says_to_pick_another():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = streaminfer("broker", "--port", str(port), timeout=30)
    assert_one_line_error(result, f"port {port}", "--port")


def test_produce_to_an_unreachable_broker_fails_in_one_line():
    result = streaminfer("produce", "--bootstrap", f"127.0.0.1:{free_port()}", "--count", "3", timeout=60)
    assert_one_line_error(result, "cannot reach Kafka")


def test_demo_with_drift_answers_every_request_and_shows_drift_on_exactly_the_shifted_features(tmp_path):
    result = streaminfer(
        "demo", "--drift", "--requests", "1200", "--timeout", "200", "--model-repo", str(tmp_path / "models"),
        timeout=400, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary, drift = result.stdout.strip().splitlines()[-2:]
    print(drift)
    assert "requests=1200 predictions=1200 dead_letters=0" in summary
    assert "p99=" in summary and "throughput=" in summary
    assert "on mean radius, mean texture, worst area;" in drift, drift
    # the 4 windows after the shift drift; the one before it may too: the monitor merges the four
    # partitions by timestamp, and rows produced in the shift's millisecond can land in it
    drifted = int(drift.split("windows drifted ")[1].split("/")[0])
    assert 4 <= drifted <= 5 and "/8;" in drift and "joined=1200" in drift
    assert (tmp_path / "models" / "breast-cancer" / "1.0.0" / "model.onnx").is_file()

    report = streaminfer("drift", "report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    path = Path(report.stdout.split("report:")[1].split()[0])
    assert path.is_file() and path.parent == tmp_path / "reports" / "drift" / "breast-cancer" / "1.0.0"


def test_drift_report_without_any_says_how_to_get_one(tmp_path):
    result = streaminfer("drift", "report", cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "no report", "--bootstrap")


def test_alerts_check_with_a_missing_secret_names_the_variable_to_export(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text((Path(__file__).parents[2] / "infra" / "alerts" / "rules.yml").read_text())
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("STREAMINFER_")}
    result = subprocess.run([*CLI, "alerts", "check", "--rules", str(rules)], capture_output=True, text=True,
                            timeout=60, env={**env_free, "COLUMNS": "200"}, check=False)
    assert_one_line_error(result, "receiver 'ml-team'", "export STREAMINFER_ML_TEAM_SECRET=")


def test_alerts_check_with_an_unreachable_receiver_says_to_start_it_or_fix_the_url(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(
        f"receivers: [{{name: team, url: 'http://127.0.0.1:{free_port()}/hook', secret_env: T_SECRET}}]\n"
        "route: {receiver: team}\nrules: [{name: Drift, signal: drift}]\n"
    )
    result = subprocess.run([*CLI, "alerts", "check", "--rules", str(rules)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "T_SECRET": "x", "COLUMNS": "200"}, check=False)
    assert_one_line_error(result, "receiver 'team'", "does not accept connections", "fix the URL")


def test_a_silence_set_from_the_cli_is_listed_until_it_is_expired(tansu):
    topics = [f"STREAMINFER_ALERTING__TOPICS__{name}=t-{name.lower()}-{os.getpid()}-{free_port()}"
              for name in ("SILENCES", "OUTBOX")]
    env = {**os.environ, "COLUMNS": "200", **dict(t.split("=", 1) for t in topics)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "--bootstrap", tansu.bootstrap], capture_output=True, text=True,
                              timeout=60, env=env, check=False)

    made = cli("alerts", "silence", "--match", "feature=~mean.*", "--match", "model=breast-cancer",
               "--duration", "2h", "--comment", "known shift")
    assert made.returncode == 0, made.stderr
    silence_id = made.stdout.split()[1]
    listed = cli("alerts", "list")
    assert silence_id in listed.stdout and "feature=~mean.*" in listed.stdout and "known shift" in listed.stdout
    assert cli("alerts", "expire", silence_id).returncode == 0
    assert silence_id not in cli("alerts", "list").stdout
    bad = cli("alerts", "silence", "--match", "feature=~mean(", "--duration", "2h")
    assert_one_line_error(bad, "bad regex")


def test_topics_create_lays_out_every_declared_topic_as_the_services_would(tansu):
    created = streaminfer("topics", "create", "--bootstrap", tansu.bootstrap,
                          env={"STREAMINFER_TOPICS__PARTITIONS": "3", "STREAMINFER_TOPICS__REQUESTS": "cli-topics.requests"})
    assert created.returncode == 0, created.stderr

    async def layout() -> dict[str, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(["cli-topics.requests", "monitoring.silences"])
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    assert asyncio.run(layout()) == {"cli-topics.requests": 3, "monitoring.silences": 1}
