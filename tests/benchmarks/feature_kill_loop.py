"""The feature worker killed mid-stream and restarted, over and over: does it ever lose or
double-count an aggregate?

    PYTHONPATH=. python tests/benchmarks/feature_kill_loop.py [--runs 100] [--stores sqlite,redis]
        [--backlog] [--out tests/benchmarks/results/feature_kill_loop.md]

One Apache Kafka broker (from the Maven jars) and one Redis server for the whole loop; each
iteration has its own topics, Faust app id, sink group and Feast repository. An iteration drives
the feature worker directly, without the inference pipeline: synthetic requests (entity and
event time in them) and their predictions (a score) are produced at a steady pace (with
``--backlog``: all of them before the worker starts), the worker (``streaminfer features
worker``, its own process) is SIGKILLed at a random moment once it has written features for
some entities, started again at once, and the stream goes on. It passes
when every entity's online features equal the aggregates recomputed from the stream and the
prediction log holds every request; a failure records what differed and on which hop of the
app the missing requests stopped (``features.scored``, ``features.log``).

Stores alternate (sqlite, redis, sqlite, ...), so a tally cut short still covers both. The
tally is rewritten to ``--out`` after every iteration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, ResponseTensor, encode, request_body
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.records import decode_log, decode_part, decode_scored
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import init_repository, stats_features, window_spec
from streaminfer.streams.features.training import prediction_log
from streaminfer.streams.features.worker import prepare_topics
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.fixtures.apache_kafka import ApacheKafkaBroker, ensure_kafka_jars
from tests.support.features import FeatureWorker, RedisServer, feature_settings, features_as_of, read_topic

ENTITIES = [f"customer-{n}" for n in range(8)]
REQUESTS = 240
STEP_MS = 2_000  # event times over 8 minutes, so the windows move
PACE_S = 0.02  # one request and its prediction every 20 ms or so: about 6 s of stream
SETTLE_S = 90.0
console = Console()


@dataclass
class Outcome:
    store: str
    iteration: int
    passed: bool
    seconds: float
    differed: list[str] = field(default_factory=list)
    stall_restarts: int = 0
    """Times the worker's stall watch restarted it (a dropped record stops its commits)."""

    held_commits: int = 0
    """Partitions whose commits waited at a record Faust fetched and never handed to an agent."""


def synthetic_stream(run: str, seed: int) -> tuple[list[tuple[str, str, int, float]], list[list[tuple[str, bytes, bytes, list, int]]]]:
    """(request id, entity, event time, score) per request, and per request the records to
    produce: the request (its event time as the record time), then its prediction."""
    rng = random.Random(seed)
    base_ms = int(time.time() * 1000) - 10 * 60_000
    sent, groups = [], []
    for n in range(REQUESTS):
        request_id, entity = f"{run}-{n}", ENTITIES[rng.randrange(len(ENTITIES))]
        ts, score = base_ms + n * STEP_MS + rng.randrange(STEP_MS), round(rng.random(), 6)
        body = request_body(request_id, "input", [[float(n), 1.0]], parameters={"entity_id": entity})
        prediction = encode(Prediction(request_id, "m", "1", [ResponseTensor("probabilities", [1, 2], "FP64", [1 - score, score])]))
        key = request_id.encode()
        groups.append([("requests", key, body, [(h.REQUEST_ID, key)], ts), ("predictions", key, prediction, [], None)])
        sent.append((request_id, entity, ts, score))
    return sent, groups


async def produce(bootstrap: str, topics: TopicSettings, groups: list[list[tuple]], pace_s: float) -> None:
    """Each request and then its prediction, ``pace_s`` apart (0: all at once)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    await producer.start()
    try:
        sent = []
        for group in groups:
            for topic, key, value, headers, ts in group:
                name = topics.requests if topic == "requests" else topics.predictions
                sent.append(await producer.send(name, value=value, key=key, headers=headers, timestamp_ms=ts))
            if pace_s:
                await asyncio.gather(*sent)
                await asyncio.sleep(pace_s)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def expected_online(sent: list[tuple[str, str, int, float]], settings: FeatureSettings) -> dict[str, dict[str, Any]]:
    spec = window_spec(settings)
    expected = {}
    for entity in ENTITIES:
        events = [(ts, score) for _, e, ts, score in sent if e == entity]
        if events:
            expected[entity] = features_as_of(events, spec, max(ts for ts, _ in events))
    return expected


def differences(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for entity, values in want.items():
        for name, value in values.items():
            have = got.get(entity, {}).get(name)
            if have is None or abs(have - value) > 1e-6 * max(1.0, abs(value)):
                out.append(f"{entity} {name} {have} != {value}")
    return out


async def read_online(settings: FeatureSettings) -> dict[str, dict[str, Any]]:
    """Nothing yet while the starting worker registers the feature views again (``feast apply``
    rewrites the registry a reader may be loading)."""
    try:
        return await asyncio.to_thread(OnlineFeatures(settings).read, ENTITIES, stats_features(settings))
    except Exception:  # noqa: BLE001 - Feast's registry errors have no common base; the caller retries
        return {entity: {name.split(":", 1)[1]: None for name in stats_features(settings)} for entity in ENTITIES}


async def wait_for_some_rows(settings: FeatureSettings, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await read_online(settings)
        if sum(1 for v in got.values() if v["requests_300s"] is not None) >= 2:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the feature worker wrote nothing before it was to be killed")


def logged_ids(settings: FeatureSettings) -> set[str]:
    with contextlib.suppress(OSError, ValueError):  # replaced atomically; a bad read is retried
        return set(prediction_log(settings)["request_id"])
    return set()


async def where_lost(bootstrap: str, settings: FeatureSettings, missing: set[str]) -> str:
    """On which hop of the app the requests missing from the prediction log stopped."""
    parts = [decode_part(r.value) for r in await read_topic(bootstrap, settings.topics.joinable, idle_s=0.5)]
    scored = {decode_scored(r.value).request_id for r in await read_topic(bootstrap, settings.topics.scored, idle_s=0.5)}
    log = {decode_log(r.value).request_id for r in await read_topic(bootstrap, settings.topics.log, idle_s=0.5)}
    on_joinable = {kind: len(missing & {p.request_id for p in parts if p.kind == kind}) for kind in ("request", "prediction", "pair")}
    return (f"{len(missing)} missing from the prediction log ({sorted(missing)[:4]}): on {settings.topics.joinable} "
            f"{on_joinable}, {len(missing & scored)} on {settings.topics.scored}, {len(missing & log)} on {settings.topics.log}")


async def iteration(broker: ApacheKafkaBroker, redis: RedisServer, store: str, n: int, work: Path, seed: int,
                    backlog: bool) -> Outcome:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(dir=work))
    settings = feature_settings(tmp, store, redis if store == "redis" else None)
    suffix = settings.app_id.rsplit("-", 1)[1]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}",
                           deadletter=f"deadletter-{suffix}")
    kafka = KafkaSettings(bootstrap=broker.bootstrap, group_id=f"loop-{suffix}", session_timeout_ms=6000,
                          heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    init_repository(settings)
    await prepare_topics(kafka, topics, settings)
    sent, groups = synthetic_stream(suffix, seed)
    if backlog:
        await produce(broker.bootstrap, topics, groups, 0)
    worker = FeatureWorker(kafka, topics, settings, tmp / "worker.log").start()
    outcome = Outcome(store, n, False, 0.0)
    try:
        producing = asyncio.create_task(produce(broker.bootstrap, topics, [] if backlog else groups, PACE_S))
        await wait_for_some_rows(settings)
        await asyncio.sleep(random.Random(seed).uniform(0, 0.5 if backlog else 1.5))
        worker.kill()  # SIGKILL, mid-stream
        worker.start()
        await producing
        want, ids = expected_online(sent, settings), {r for r, *_ in sent}
        deadline = time.monotonic() + SETTLE_S
        while True:
            diff, missing = differences(await read_online(settings), want), ids - logged_ids(settings)
            if not diff and not missing:
                outcome.passed = True
                break
            if time.monotonic() > deadline:
                outcome.differed = diff[:6] + ([await where_lost(broker.bootstrap, settings, missing)] if missing else [])
                shutil.copy(tmp / "worker.log", work / f"failed-{store}-{n}-worker.log")
                break
            await asyncio.sleep(0.5)
    except Exception as exc:  # noqa: BLE001 - an iteration that breaks is a failure to tally, not the end of the loop
        outcome.differed = [f"iteration failed: {exc!r}"]
    finally:
        worker.kill()  # its state is checked already: no need to wait for a clean stop
        text = (tmp / "worker.log").read_text(errors="replace")
        outcome.stall_restarts = text.count("feature worker stuck; restarting")
        outcome.held_commits = text.count("commits there wait for it")
        if outcome.stall_restarts or outcome.held_commits:  # kept for reading, like a failure's
            (work / f"held-{store}-{n}-worker.log").write_text(text)
        await delete_topics(broker.bootstrap, [topics.requests, topics.predictions, topics.deadletter,
                                               *settings.topics.all(), *settings.changelog_topics()])
        shutil.rmtree(tmp, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Keep the broker small over hundreds of iterations."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(Exception):
            await admin.delete_topics(names)
    finally:
        await admin.close()


def tally(outcomes: list[Outcome], command: str, backlog: bool) -> str:
    stream = ("produced before the worker starts (a backlog)" if backlog
              else f"produced over ~{REQUESTS * PACE_S:.0f} s while the worker runs")
    lines = ["# Feature worker: killed mid-stream and restarted, in a loop", "", f"Command: `{command}`", "",
             f"Apache Kafka broker from the Maven jars, {REQUESTS} requests per iteration {stream}, "
             f"{len(ENTITIES)} entities, one SIGKILL per iteration at a random moment after the first features were "
             "written, restarted at once; pass: online features equal the stream's aggregates and the prediction log "
             "holds every request.", "", "| store | runs | passed | failed | consecutive passes at the end | runs with a stall restart "
             "| runs with commits held at an unhandled record | median s |", "|---|---|---|---|---|---|---|---|"]
    for store in dict.fromkeys(o.store for o in outcomes):
        mine = [o for o in outcomes if o.store == store]
        streak = 0
        for o in reversed(mine):
            if not o.passed:
                break
            streak += 1
        seconds = sorted(o.seconds for o in mine)
        lines.append(f"| {store} | {len(mine)} | {sum(o.passed for o in mine)} | {sum(not o.passed for o in mine)} "
                     f"| {streak} | {sum(o.stall_restarts > 0 for o in mine)} | {sum(o.held_commits > 0 for o in mine)} "
                     f"| {seconds[len(seconds) // 2]:.1f} |")
    failures = [o for o in outcomes if not o.passed]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {o.store} #{o.iteration} ({o.stall_restarts} stall restarts): " + "; ".join(o.differed)
                  for o in failures]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    stores = args.stores.split(",")
    work = Path(tempfile.mkdtemp(prefix="feature-kill-loop-"))
    outcomes: list[Outcome] = []
    broker = ApacheKafkaBroker(work / "kafka", ensure_kafka_jars()).start()
    redis = RedisServer()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("kill and restart", total=args.runs * len(stores))
            for n in range(args.runs):
                for store in stores:
                    outcome = await iteration(broker, redis, store, n, work, seed=args.seed + n, backlog=args.backlog)
                    outcomes.append(outcome)
                    failed = Counter(o.store for o in outcomes if not o.passed)
                    progress.update(task, advance=1, description=f"kill and restart ({dict(failed) or 'no failures'})")
                    if not outcome.passed:
                        progress.console.print(f"[red]{store} #{n} failed[/red]: " + "; ".join(outcome.differed))
                    if args.out:
                        args.out.write_text(tally(outcomes, command, args.backlog))
    finally:
        redis.stop()
        broker.stop()
    console.print(tally(outcomes, command, args.backlog))
    console.print(f"worker logs of failed iterations: {work}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="iterations per store")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backlog", action="store_true",
                        help="produce the whole stream before the worker starts and kill it while it works through "
                             "the backlog (far more in flight at the kill than at the stream's pace)")
    parser.add_argument("--out", type=Path, default=None, help="write the tally (markdown) here after every iteration")
    sys.exit(asyncio.run(main(parser.parse_args())))
