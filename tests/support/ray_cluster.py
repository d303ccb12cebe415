"""A two-node Ray cluster on this machine, for tests of placement and of running without a
shared disk.

The head and the second node are two ``ray start --block`` processes, each in a session of its
own with its own temp dir and ports, so tearing the cluster down kills exactly these process
groups and never another test's Ray (``ray stop`` would stop every Ray on the machine). The
second node can run in a mount namespace of its own (``unshare -m``) with an empty tmpfs over
given paths: its actors see the machine's files except those, as a node without the driver's
disk would. The nodes listen on different loopback addresses (127.0.0.1 and 127.0.0.2), so a
driver on this machine attaches to the head. A cluster that started and stopped cleanly removes
its temp dirs; one that failed keeps them, with its nodes' session logs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from streaminfer.broker import free_ports

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP, SECOND_IP = "127.0.0.1", "127.0.0.2"


@dataclass(frozen=True)
class Cluster:
    address: str
    """The head's GCS, for ``ray.init(address=...)`` and ``--ray-address``."""

    dashboard: str
    """The head's dashboard, for the state API (``ray.util.state.list_actors(address=...)``)."""

    logs: tuple[Path, ...]


def _distinct_free_ports(count: int, taken: set[int]) -> tuple[int, ...]:
    """Free ports, none of them in ``taken`` (which they join)."""
    ports = free_ports(count, HEAD_IP, avoid=taken)
    taken.update(ports)
    return ports


def _node_ports(ip: str, taken: set[int], workers: int = 30) -> list[str]:
    """Every port a node opens, picked free and distinct across the cluster (Ray's defaults,
    such as the agent's 52365, would collide with another Ray on this machine)."""
    manager, objects, agent, agent_grpc, runtime_env, metrics, *worker_ports = _distinct_free_ports(6 + workers, taken)
    return [
        f"--node-ip-address={ip}", f"--node-manager-port={manager}", f"--object-manager-port={objects}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
        f"--worker-port-list={','.join(map(str, worker_ports))}",
    ]


def _start(command: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The node's whole process group: ``ray start``, its raylet, GCS, dashboard and workers;
    asked first, then killed, whatever of the group is left."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(15)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def _alive_nodes(dashboard: str) -> int:
    from ray.util.state import list_nodes

    try:
        return sum(1 for node in list_nodes(address=dashboard, raise_on_missing_output=False) if node.state == "ALIVE")
    except Exception:  # noqa: BLE001 - the dashboard is still starting
        return 0


@contextmanager
def two_node_cluster(
    work: Path, *, head_cpus: int = 1, second_cpus: int = 1, second_gpus: int = 0, hidden_on_second: Sequence[Path] = (),
    timeout_s: float = 120.0,
) -> Iterator[Cluster]:
    """A head and a second node; ``hidden_on_second``: paths the second node sees as empty;
    ``second_gpus``: GPUs the second node declares (Ray schedules on them whether or not the
    hardware is there). ``second_cpus=0``: the head alone (a one-node cluster to compare with)."""
    tag = uuid.uuid4().hex[:6]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    taken: set[int] = set()
    gcs_port, dashboard_port, client_port = _distinct_free_ports(3, taken)
    head_log, second_log = work / "ray-head.log", work / "ray-second.log"
    temp_dirs = (f"/tmp/ray-h{tag}", f"/tmp/ray-s{tag}")
    head = _start([
        RAY, "start", "--head", "--block", f"--port={gcs_port}", f"--num-cpus={head_cpus}",
        "--num-gpus=0", "--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}", f"--temp-dir={temp_dirs[0]}", "--disable-usage-stats",
        *_node_ports(HEAD_IP, taken),
    ], head_log, env)
    processes = [head]
    address, dashboard = f"{HEAD_IP}:{gcs_port}", f"http://{HEAD_IP}:{dashboard_port}"
    try:
        _wait_for(lambda: _alive_nodes(dashboard) >= 1, timeout_s, "the head", head_log, temp_dirs[0])
        logs: tuple[Path, ...] = (head_log,)
        if second_cpus:
            second = [
                RAY, "start", "--block", f"--address={address}", f"--num-cpus={second_cpus}", f"--num-gpus={second_gpus}",
                f"--resources={json.dumps({'second_node': 1})}", f"--temp-dir={temp_dirs[1]}",
                *_node_ports(SECOND_IP, taken),
            ]
            if hidden_on_second:
                mounts = " && ".join(f"mount -t tmpfs none {shlex.quote(str(path))}" for path in hidden_on_second)
                second = ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mounts} && exec {shlex.join(second)}"]
            processes.append(_start(second, second_log, env))
            _wait_for(lambda: _alive_nodes(dashboard) >= 2, timeout_s, "the second node", second_log, temp_dirs[1])
            logs = (head_log, second_log)
        yield Cluster(address, dashboard, logs)
    finally:
        for process in reversed(processes):
            _stop(process)
    for temp_dir in temp_dirs:  # reached only when nothing failed: a failure keeps the nodes' session logs
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for(ready: Callable[[], bool], timeout_s: float, what: str, log: Path, temp_dir: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not join within {timeout_s:.0f} s (its raylet's logs: "
                                 f"{temp_dir}/session_latest/logs); its log ends:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
