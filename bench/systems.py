"""The systems under test, each started as its own process tree on the same broker and model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.connection import CLIENTS_FILE_VARIABLE, merged_environment, system_environment
from streaminfer.broker import free_port


@dataclass(frozen=True)
class Target:
    """Where the systems run: the broker, the clients file every child reads its connection
    from (``bench.connection``), the run's work folder; ``external``: a broker of the user's."""

    bootstrap: str
    clients_file: Path
    work_dir: Path
    external: bool = False
    plaintext: bool = True
    """Whether the connection is PLAINTEXT (no TLS, no SASL)."""

    def child_environment(self) -> dict[str, str]:
        return {"PYTHONPATH": str(CHECKOUT), CLIENTS_FILE_VARIABLE: str(self.clients_file)}


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

    launch: Callable[[Target, Topics], Running] | None = None
    consumes_backlog: bool = True
    """False for systems that start at the latest offset: they get a burst after they are ready."""

    request_headers: list[tuple[str, bytes]] = field(default_factory=list)
    rate_bucket_s: float = 0.25
    """Width of the buckets the sustained answer rate is the median of. Systems that release
    answers in bursts (exactly-once transactions) need buckets many bursts wide: with narrower ones
    most buckets are empty or hold a burst and the median says 0 or far too much."""
    answer_key: Callable[[bytes | None, bytes], str | None] = field(default=lambda key, value: key.decode() if key else None)
    answer_key_kind: str = "key"
    """How the fixed-rate load process reads answers (``bench.offered.answer_key``)."""


@dataclass
class Running:
    pid: int
    stop: Callable[[], None]
    exit_code: Callable[[], int | None] = lambda: None
    """The system's exit code once it has exited (None while it runs)."""
    log_path: Path | None = None


#: The source checkout the benchmark runs from: the baselines are started as ``python -m bench...``.
CHECKOUT = Path(__file__).resolve().parent.parent


def _spawn(command: list[str], log_path: Path, env: dict[str, str | None] | None = None) -> Running:
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it until stop() closes it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=merged_environment(env or {}),
                               start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()

    return Running(process.pid, stop, process.poll, log_path)


def baseline(name: str, kind: str, backlog: int, model_path: Path, program: str | None = None,
             processes: int = 1) -> System:
    """``program``: the ``bench.baselines`` entry (default ``name``), run as ``processes``
    members of one consumer group."""

    def launch(target: Target, topics: Topics) -> Running:
        command = [sys.executable, "-m", "bench.baselines", program or name,
                   topics.requests, topics.answers, topics.group, str(model_path)]
        if processes > 1:
            command = [sys.executable, "-m", "bench.group", str(processes), *command]
        return _spawn(command, target.work_dir / f"{name.replace(' ', '_')}.log", dict(target.child_environment()))

    return System(name=name, kind=kind, backlog=backlog, launch=launch)


def streaminfer(
    label: str, backlog: int, repository: Path, consumers: int | None, settings: dict[str, str | None] | None = None,
    rate_bucket_s: float = 0.25,
) -> System:
    """``settings``: more ``STREAMINFER_*`` variables, e.g. the exactly-once guarantee."""

    def launch(target: Target, topics: Topics) -> Running:
        command = [sys.executable, "-m", "streaminfer.cli", "run", "--bootstrap", target.bootstrap,
                   "--model-repo", str(repository), "--metrics-port", "0", "--group-id", topics.group,
                   "--no-monitor", "--no-experiments"]
        if consumers is not None:
            command += ["--consumers", str(consumers)]
        env: dict[str, str | None] = {
            **system_environment(target.external),
            "STREAMINFER_TOPICS__REQUESTS": topics.requests,
            "STREAMINFER_TOPICS__PREDICTIONS": topics.answers,
            "STREAMINFER_TOPICS__DEADLETTER": topics.deadletter,
            "STREAMINFER_RAY__DASHBOARD_PORT": str(free_port()),
            "RAY_AUTH_MODE": "disabled",
            **(settings or {}),
        }
        return _spawn(command, target.work_dir / f"{label.replace(' ', '_')}.log", env)

    return System(name=label, kind="streaminfer", backlog=backlog, launch=launch, rate_bucket_s=rate_bucket_s)


def mlserver(backlog: int, home: Path, model_path: Path) -> System:
    """Seldon MLServer in Kafka mode, in its own virtual environment (see ``mlserver_peer``)."""
    from bench.connection import read_connection
    from bench.mlserver_peer import MLServerPeer, PeerUnavailable

    peer = MLServerPeer(home, model_path)

    def launch(target: Target, topics: Topics) -> Running:
        if not target.plaintext:
            raise PeerUnavailable("MLServer 1.7.1's Kafka mode takes a bootstrap only (no TLS or SASL settings), "
                                  "so it cannot join a secured cluster")
        peer.ensure_installed()
        peer.start(target.bootstrap, topics.requests, topics.answers, clients=read_connection(
            target.child_environment()).clients())
        assert peer.pid is not None  # start() returned: MLServer's process is running
        return Running(peer.pid, peer.stop, log_path=peer.log_path)

    return System(
        name="MLServer 1.7.1 (Kafka mode)", kind="peer", backlog=backlog, launch=launch,
        consumes_backlog=False, request_headers=peer.request_headers(), answer_key=MLServerPeer.answer_key,
        answer_key_kind="mlserver",
    )


def describe(system: System) -> str:
    return json.dumps({"name": system.name, "kind": system.kind, "backlog": system.backlog})
