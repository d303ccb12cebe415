"""What TLS and SASL cost: the pipeline draining a backlog over PLAINTEXT, SASL_SSL (SCRAM-SHA-512)
and mutual TLS on the same secured Apache Kafka, side by side in one run, as ratios.

    python -m tests.benchmarks.secured_throughput [REQUESTS] [RUNS]

One broker (``tests/support/secured_kafka.py``) with a listener per protocol; each principal holds
the pipeline's ACLs. Per run and protocol: fresh topics, REQUESTS demo requests produced first,
then ``start_app`` (two consuming actors) and the rate from the group's first commit to its last.
Protocols are interleaved run by run, so the machine's noise falls on each alike; medians are
reported. Results go to tests/benchmarks/results/secured_throughput.md.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from aiokafka.errors import GroupCoordinatorNotAvailableError
from rich.progress import Progress

from streaminfer.app import start_ray
from streaminfer.demo.model import build_demo_model, demo_data
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RaySettings
from tests.integration.test_pipeline import demo_records
from tests.integration.test_secured_kafka import create_topics_as_admin, grant
from tests.support.harness import app_settings, send, started
from tests.support.secured_kafka import ScramUser, SecuredKafkaBroker

ROOT = Path(__file__).resolve().parents[2]
APP = ScramUser("bench", f"bench-{uuid.uuid4().hex}")


def protocols(broker: SecuredKafkaBroker) -> dict[str, tuple[str, KafkaSettings]]:
    identity = broker.client_identity("bench")
    common = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 6000}
    return {
        "PLAINTEXT": ("User:ANONYMOUS", KafkaSettings(bootstrap=broker.address("PLAIN"), **common)),
        "SASL_SSL (SCRAM-SHA-512)": ("User:bench", KafkaSettings(
            bootstrap=broker.address("SCRAM"), security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
            sasl_username=APP.name, sasl_password=APP.password, ssl_ca_file=broker.ca.cert, **common)),
        "SSL (mutual TLS)": ("User:bench", KafkaSettings(
            bootstrap=broker.address("MTLS"), security_protocol="SSL", ssl_ca_file=broker.ca.cert,
            ssl_cert_file=identity.cert, ssl_key_file=identity.key, **common)),
    }


async def one_run(broker: SecuredKafkaBroker, principal: str, kafka: KafkaSettings, repo: ModelRepository,
                  requests: int) -> float:
    suffix = uuid.uuid4().hex[:6]
    kafka = kafka.model_copy(update={"group_id": f"bench-{suffix}"})
    topics = TopicSettings(requests=f"req-{suffix}", predictions=f"pred-{suffix}", deadletter=f"dlq-{suffix}",
                           shadow=f"shadow-{suffix}", partitions=4)
    settings = app_settings(kafka, topics, repo, consumers=2)
    await create_topics_as_admin(broker, settings)
    grant(broker, principal, settings, ["pipeline", "clients"])
    sent = await send(kafka, topics.requests, demo_records(demo_data().x_test, requests, "b"))
    drained = asyncio.create_task(drain_rate(kafka, sent))  # watching before the group forms
    app = await started(settings)
    try:
        return await drained
    finally:
        await app.stop()


async def drain_rate(kafka: KafkaSettings, sent: dict, timeout_s: float = 600) -> float:
    """Answers per second from the group's first commit to its last: the steady drain, without
    the actors' start-up and the group join."""
    admin = KafkaClients(kafka).admin()
    await admin.start()
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                offsets = await admin.list_consumer_group_offsets(kafka.group_id, partitions=list(sent))
            except GroupCoordinatorNotAvailableError:  # the group does not exist yet
                await asyncio.sleep(0.05)
                continue
            done = sum(max(offsets[tp].offset, 0) if tp in offsets else 0 for tp in sent)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= sum(sent.values()):
                assert first is not None
                return (done - first[1]) / max(now - first[0], 1e-3)
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    raise TimeoutError(f"group {kafka.group_id} did not commit {sum(sent.values())} records in {timeout_s} s")


async def main(requests: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="secured-bench-"))
    repo = ModelRepository(work / "models")
    build_demo_model(repo)
    start_ray(RaySettings(num_cpus=2, temp_dir=f"/tmp/ray-{uuid.uuid4().hex[:6]}"), log_to_driver=False)
    broker = SecuredKafkaBroker(work / "kafka", [APP]).start()
    rates: dict[str, list[float]] = {}
    try:
        cases = protocols(broker)
        with Progress() as progress:
            task = progress.add_task("runs", total=runs * len(cases))
            for _ in range(runs):
                for name, (principal, kafka) in cases.items():
                    rates.setdefault(name, []).append(await one_run(broker, principal, kafka, repo, requests))
                    progress.advance(task)
    finally:
        broker.stop()
    base = statistics.median(rates["PLAINTEXT"])
    lines = [
        "# What security costs: the pipeline on one secured Apache Kafka 4.1, per listener",
        "",
        f"`python -m tests.benchmarks.secured_throughput {requests} {runs}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {requests:,} requests drained from a backlog by two "
        "consuming actors, from the group's first commit to its last, runs interleaved, medians. A shared 2-core "
        "machine: figures are noisy, ratios less so.",
        "",
        "| listener | median answers/s | runs | vs PLAINTEXT |",
        "|---|---|---|---|",
    ]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} | {median / base:.2f}× |")
    out = ROOT / "tests/benchmarks/results/secured_throughput.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
