"""The fault suite at scale: every fault scenario at 100,000 requests (or more) on Apache Kafka,
for each guarantee it applies to, each with its exact ledger; the table goes to
tests/benchmarks/results/fault_scale.md.

    python -m tests.benchmarks.fault_scale [--requests 100000] [--only SUBSTRING] [--out PATH]

The broker scenarios (tests/integration/faults/broker_scenarios.py) drive ``streaminfer run``
as a subprocess, each on an Apache Kafka (or cluster) of its own; the process scenarios
(tests/integration/faults/process_scenarios.py, when present) run the pipeline in this process
on one shared Apache Kafka and a local Ray. Scenarios run one after another; the results file is
written again after each, so an interrupted run keeps what it measured. Exits 1 if a scenario
broke its guarantee or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import platform
import shlex
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streaminfer.demo.model import build_demo_model
from streaminfer.workers.models.repository import ModelRepository
from tests.integration.faults import broker_scenarios as broker
from tests.integration.faults.broker_scenarios import Place
from tests.integration.faults.ledger import GUARANTEES, RECOVERY, Guarantee, LedgerReport
from tests.support.kafka_jvm import ApacheKafkaBroker, ensure_kafka_jars

RESULTS = Path(__file__).parent / "results" / "fault_scale.md"
STREAM_S = 40.0
"""Broker scenarios spread their requests over this long: the fault strikes a quarter in."""
PROCESS_RATE_PER_S = 2_500
SCENARIO_TIMEOUT_S = 900.0
console = Console()


@dataclass(frozen=True)
class Run:
    name: str
    guarantee: Guarantee
    start: Callable[[], Awaitable[LedgerReport]]


@dataclass(frozen=True)
class Outcome:
    run: Run
    report: LedgerReport | None
    error: str | None
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok

    def row(self) -> str:
        if self.report is not None:
            return self.report.markdown_row()
        return f"| {self.run.name} | {self.run.guarantee} | - | - | - | - | - | FAILED: {self.error} |"


def broker_runs(count: int, place: Place) -> list[Run]:
    rate = broker.rate_for(count, STREAM_S)
    runs = []
    for guarantee in GUARANTEES:
        runs += [
            Run("run process tree SIGKILLed", guarantee,
                functools.partial(broker.run_killed, count, guarantee, place, rate_per_s=rate)),
            Run("broker SIGTERM, down 10 s", guarantee,
                functools.partial(broker.broker_down, count, guarantee, place, how="stop", rate_per_s=rate)),
            Run("broker SIGKILL, down 10 s", guarantee,
                functools.partial(broker.broker_down, count, guarantee, place, how="kill", rate_per_s=rate)),
            Run("1 of 3 brokers SIGKILLed", guarantee,
                functools.partial(broker.cluster_broker_killed, count, guarantee, place, rate_per_s=rate)),
        ]
    return runs


def process_runs(count: int, place: Place, bootstrap: Callable[[], str]) -> list[Run]:
    """The other half of the suite, if it is there: its scenarios need a local Ray and one broker."""
    try:
        from tests.integration.faults import process_scenarios as process
        from tests.integration.faults.process_env import ProcessEnv
    except ImportError as exc:
        console.print(f"[yellow]process scenarios not available ({exc}); broker scenarios only")
        return []
    repository = ModelRepository(place.model_repo)

    def start(name: str, guarantee: Guarantee) -> Awaitable[LedgerReport]:
        _ensure_ray()
        env = ProcessEnv(bootstrap(), repository, place.scratch(name), rate_per_s=PROCESS_RATE_PER_S, answer_timeout_s=300)
        return process.SCENARIOS[name](env, count, guarantee)

    return [
        Run(name, guarantee, functools.partial(start, name, guarantee))
        for name in process.SCENARIOS for guarantee in process.GUARANTEES_OF[name]
    ]


def _ensure_ray() -> None:
    from streaminfer.app import start_ray
    from streaminfer.broker import free_port
    from streaminfer.workers.settings import RaySettings

    temp_dir = f"/tmp/ray-s{uuid.uuid4().hex[:6]}"
    start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=temp_dir), log_to_driver=False)


def _process_recovery() -> str:
    try:
        from tests.integration.faults.process_stream import RECOVERY as PROCESS_RECOVERY
    except ImportError:
        return "as the broker scenarios"
    return PROCESS_RECOVERY


def write(outcomes: list[Outcome], command: str, started: datetime, out: Path) -> None:
    lines = [
        "# Fault suite at scale",
        "",
        f"`{command}`, started {started:%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        "(2 cores shared with other sessions' work; Apache Kafka 4.1 from Maven jars).",
        "",
        "Each row is one scenario at one guarantee with its exact ledger by request id: *sent* counts requests "
        "the broker acknowledged; *missing*: sent and never answered; *duplicated*: answers beyond the first "
        "(exactly-once as a `read_committed` reader sees them); *dead-lettered*: answered by a dead letter. "
        f"*recover s*: {RECOVERY}; for the process scenarios (names with underscores): {_process_recovery()}. "
        "At-least-once must miss nothing; exactly-once must also duplicate nothing.",
        "",
        LedgerReport.MARKDOWN_HEADER,
        *(outcome.row() for outcome in outcomes),
        "",
        f"Wall time: {sum(o.wall_s for o in outcomes) / 60:.1f} min for {len(outcomes)} runs.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


async def run_all(runs: list[Run], command: str, out: Path) -> list[Outcome]:
    started = datetime.now(UTC)
    outcomes: list[Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fault scenarios", total=len(runs))
        for run in runs:
            progress.update(task, description=f"{run.name} [{run.guarantee}]")
            began = time.monotonic()
            try:
                report = await asyncio.wait_for(run.start(), SCENARIO_TIMEOUT_S)
                outcome = Outcome(run, report, None, time.monotonic() - began)
            except Exception as exc:  # noqa: BLE001 - one scenario failing must not lose the others' results
                traceback.print_exc()
                outcome = Outcome(run, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc)
                                  else type(exc).__name__, time.monotonic() - began)
            outcomes.append(outcome)
            line = outcome.report.line() if outcome.report else f"{run.name} [{run.guarantee}]: FAILED {outcome.error}"
            progress.console.print(("[green]" if outcome.ok else "[red]") + escape(line))
            write(outcomes, command, started, out)
            progress.advance(task)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests per scenario run")
    parser.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker away on purpose: its errors are expected
    command = shlex.join(["python", "-m", "tests.benchmarks.fault_scale", *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="fault-scale-"))
    repository = ModelRepository(work / "models")
    build_demo_model(repository)
    place = Place(work, repository.root, ensure_kafka_jars())
    shared: list[ApacheKafkaBroker] = []

    def shared_bootstrap() -> str:
        if not shared:
            shared.append(ApacheKafkaBroker(place.scratch("kafka-shared"), place.kafka_libs).start())
        return shared[0].bootstrap

    runs = broker_runs(args.requests, place) + process_runs(args.requests, place, shared_bootstrap)
    if args.only:
        runs = [run for run in runs if args.only in run.name]
    console.print(f"{len(runs)} scenario runs at {args.requests:,} requests each; scratch in {work}")
    try:
        outcomes = asyncio.run(run_all(runs, command, args.out))
    finally:
        for kafka in shared:
            kafka.stop()
    console.print(f"results: {args.out}")
    return 0 if all(outcome.ok for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
