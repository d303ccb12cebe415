"""``streaminfer run`` as a user starts it: a subprocess with its own Ray, settings from its options
and ``STREAMINFER_*`` variables, its output in a log file; killed as a crash would kill it.

A ``kill()`` SIGKILLs the whole process tree at once (the CLI, the Ray processes it started and
their workers), found both by parentage and by session, since ``run`` starts in a session of its
own: nothing of it survives to answer, commit or hold a transaction open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from streaminfer.broker import free_port
from streaminfer.streams.settings import TopicSettings
from tests.integration.faults.ledger import Guarantee

READY_LINE = "consuming "
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 20.0
LOG_TAIL = 30


class RunFailed(AssertionError):
    """``streaminfer run`` exited or never became ready; carries the tail of its log."""

    def __init__(self, reason: str, log_file: Path) -> None:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        super().__init__(f"streaminfer run {reason}; last lines of {log_file}:\n{tail}")


class RunProcess:
    """One ``streaminfer run`` against ``bootstrap``, serving the demo model from ``model_repo``,
    with the monitor and the experiment controller off (the pipeline is what is measured)."""

    def __init__(
        self, bootstrap: str, topics: TopicSettings, model_repo: Path, guarantee: Guarantee, group_id: str, work_dir: Path
    ) -> None:
        self._bootstrap, self.topics, self._repo = bootstrap, topics, model_repo
        self._guarantee, self._group_id = guarantee, group_id
        self._work_dir = Path(work_dir)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self._work_dir / "run.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> RunProcess:
        """Start it and return once it says it is consuming (Ray up, actors placed, group joined)."""
        env = {
            **os.environ,
            "STREAMINFER_PIPELINE__GUARANTEE": self._guarantee,
            "STREAMINFER_TOPICS__REQUESTS": self.topics.requests,
            "STREAMINFER_TOPICS__PREDICTIONS": self.topics.predictions,
            "STREAMINFER_TOPICS__DEADLETTER": self.topics.deadletter,
            "STREAMINFER_RAY__DASHBOARD_PORT": str(free_port()),
            "STREAMINFER_RAY__TEMP_DIR": f"/tmp/ray-f{uuid.uuid4().hex[:6]}",  # short: socket paths are limited
            "COLUMNS": "200",
            "TERM": "dumb",
        }
        command = [
            sys.executable, "-m", "streaminfer.cli", "run", "--bootstrap", self._bootstrap,
            "--model-repo", str(self._repo), "--group-id", self._group_id,
            "--no-monitor", "--no-experiments", "--metrics-port", "0",
        ]
        self.starts += 1
        with self.log_file.open("ab") as log:
            log.write(f"\n=== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command, cwd=self._work_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(self._process)
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        marker = f"=== start {self.starts} at"
        while True:
            text = self.log_file.read_text(errors="replace")
            if READY_LINE in text[text.rfind(marker):]:
                return
            if (code := process.poll()) is not None:
                raise RunFailed(f"exited {code} while starting", self.log_file)
            if time.monotonic() > deadline:
                self.kill()
                raise RunFailed(f"not consuming after {START_TIMEOUT_S:.0f} s", self.log_file)
            time.sleep(0.2)

    def check_running(self) -> None:
        """Fail if it exited on its own: a fault it should have ridden out ended it."""
        if self._process is not None and (code := self._process.poll()) is not None:
            raise RunFailed(f"exited {code} on its own", self.log_file)

    def kill(self) -> None:
        """SIGKILL every process of the tree at once, as a crash of the machine's workload would."""
        if self._process is None:
            return
        pids = _tree(self._process.pid)
        _kill_all(pids)
        self._process.wait()
        _wait_gone(pids)

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C or systemd stops it; the tree killed if it takes too long or leaves any."""
        if self._process is None:
            return
        pids = _tree(self._process.pid)
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(STOP_GRACE_S)
        _kill_all(pids)
        self._process.wait()


def _tree(root: int) -> list[int]:
    """``root``, its descendants, and everything else in its session (reparented orphans)."""
    parents: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)], sessions[int(entry)] = int(fields[1]), int(fields[3])
    found = {root} | {pid for pid, sid in sessions.items() if sid == root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} outlived SIGKILL")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead; only its parent's wait is missing
