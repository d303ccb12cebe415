"""The systems under test, each started as its own process tree on the same broker and model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streaminfer.broker import free_port


@dataclass(frozen=True)
class Topics:
    requests: str
    answers: str
    deadletter: str
    group: str


@dataclass
class System:
    name: str
    kind: str  # "limit", "baseline", "peer", "streaminfer"
    backlog: int
    """Messages preloaded for the throughput phase (sized for a few seconds of work)."""

    launch: Callable[[str, Topics, Path], Running] | None = None
    consumes_backlog: bool = True
    """False for systems that start at the latest offset: they get a burst after they are ready."""

    request_headers: list[tuple[str, bytes]] = field(default_factory=list)
    rate_bucket_s: float = 0.25
    """Width of the buckets the sustained answer rate is the median of. Systems that release
    answers in bursts (exactly-once transactions) need buckets many bursts wide: with narrower ones
    most buckets are empty or hold a burst and the median says 0 or far too much."""
    answer_key: Callable[[bytes | None, bytes], str | None] = field(default=lambda key, value: key.decode() if key else None)


@dataclass
class Running:
    pid: int
    stop: Callable[[], None]


#: The source checkout the benchmark runs from: the baselines are started as ``python -m bench...``.
CHECKOUT = Path(__file__).resolve().parent.parent


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> Running:
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it until stop() closes it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()

    return Running(process.pid, stop)


def baseline(name: str, kind: str, backlog: int, model_path: Path) -> System:
    def launch(bootstrap: str, topics: Topics, work: Path) -> Running:
        command = [sys.executable, "-m", "bench.baselines", name, bootstrap,
                   topics.requests, topics.answers, topics.group, str(model_path)]
        return _spawn(command, work / f"{name}.log", {"PYTHONPATH": str(CHECKOUT)})

    return System(name=name, kind=kind, backlog=backlog, launch=launch)


def streaminfer(
    label: str, backlog: int, repository: Path, consumers: int | None, settings: dict[str, str] | None = None,
    rate_bucket_s: float = 0.25,
) -> System:
    """``settings``: more ``STREAMINFER_*`` variables, e.g. the exactly-once guarantee."""

    def launch(bootstrap: str, topics: Topics, work: Path) -> Running:
        command = [sys.executable, "-m", "streaminfer.cli", "run", "--bootstrap", bootstrap,
                   "--model-repo", str(repository), "--metrics-port", "0", "--group-id", topics.group,
                   "--no-monitor", "--no-experiments"]
        if consumers is not None:
            command += ["--consumers", str(consumers)]
        env = {
            "STREAMINFER_TOPICS__REQUESTS": topics.requests,
            "STREAMINFER_TOPICS__PREDICTIONS": topics.answers,
            "STREAMINFER_TOPICS__DEADLETTER": topics.deadletter,
            "STREAMINFER_RAY__DASHBOARD_PORT": str(free_port()),
            "RAY_AUTH_MODE": "disabled",
            **(settings or {}),
        }
        return _spawn(command, work / f"{label.replace(' ', '_')}.log", env)

    return System(name=label, kind="streaminfer", backlog=backlog, launch=launch, rate_bucket_s=rate_bucket_s)


def mlserver(backlog: int, home: Path, model_path: Path) -> System:
    """Seldon MLServer in Kafka mode, in its own virtual environment (see ``mlserver_peer``)."""
    from bench.mlserver_peer import MLServerPeer

    peer = MLServerPeer(home, model_path)

    def launch(bootstrap: str, topics: Topics, work: Path) -> Running:
        peer.ensure_installed()
        peer.start(bootstrap, topics.requests, topics.answers)
        assert peer.pid is not None  # start() returned: MLServer's process is running
        return Running(peer.pid, peer.stop)

    return System(
        name="MLServer 1.7.1 (Kafka mode)", kind="peer", backlog=backlog, launch=launch,
        consumes_backlog=False, request_headers=peer.request_headers(), answer_key=MLServerPeer.answer_key,
    )


def describe(system: System) -> str:
    return json.dumps({"name": system.name, "kind": system.kind, "backlog": system.backlog})
