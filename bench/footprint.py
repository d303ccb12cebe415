"""Memory per process as proportional set size (PSS), grouped by what each process is.

RSS counts a page shared by ten processes ten times: Ray forks its dashboard modules and workers
from a forkserver, so a sum of RSS says far more than the machine gives. PSS splits each shared
page among the processes that share it, so the per-process figures add up to the tree's real
share. Each process of a system's tree is put in a group by its command line: Ray's own
processes (GCS, raylet, dashboard head and its modules, dashboard agent, runtime-env agent,
monitors, idle workers), the driver, each consumer actor, the side actors.

    python -m bench.footprint ray-bare [--no-dashboard]

prints the groups of a bare local ``ray.init`` (what Ray costs before any of ours runs), with or
without its dashboard, as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import psutil

from bench.measure import TreeSampler

RAY_GROUPS = (
    ("gcs_server", "Ray: GCS server"),
    ("raylet/raylet", "Ray: raylet"),
    ("dashboard/dashboard.py", "Ray: dashboard head"),
    ("ray-dashboard-", "Ray: dashboard modules"),
    ("ray::DashboardAgent", "Ray: dashboard agent"),
    ("ray::RuntimeEnvAgent", "Ray: runtime env agent"),
    ("log_monitor.py", "Ray: log monitor"),
    ("autoscaler/_private/monitor.py", "Ray: autoscaler monitor"),
    ("ray::IDLE", "Ray: idle workers"),
)
CONSUMER = "ray::ConsumerActor"


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def group_of(command: str, is_root: bool, under_dashboard: bool) -> str:
    """The group of a process with this command line (``under_dashboard``: a descendant of the
    dashboard head, such as its forkserver and resource tracker)."""
    if is_root:
        return "driver"
    for marker, group in RAY_GROUPS:
        if marker in command:
            return group
    if under_dashboard:
        return "Ray: dashboard modules"
    if command.startswith(CONSUMER):
        return "consumer actor"
    if command.startswith("ray::"):
        return f"side actor: {command[5:].split()[0].split('.')[0]}"
    return f"child: {os.path.basename(command.split()[0]) if command else '?'}"


def pss_by_process(root_pid: int) -> list[tuple[str, int, int]]:
    """``(group, pid, PSS bytes)`` of the root and every living descendant."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    dashboard_pids: set[int] = set()
    out = []
    for process in processes:
        command = _command(process)
        try:
            parent = process.ppid()
            pss = process.memory_full_info().pss
        except psutil.Error:
            continue
        if "dashboard/dashboard.py" in command or parent in dashboard_pids:
            dashboard_pids.add(process.pid)
        group = group_of(command, process.pid == root_pid,
                         parent in dashboard_pids and "dashboard/dashboard.py" not in command)
        out.append((group, process.pid, pss))
    return out


def grouped(rows: list[tuple[str, int, int]]) -> dict[str, object]:
    """Totals in MiB: each group (consumer actors one by one), Ray's own with and without its
    dashboard modules (what ``include_dashboard=False`` saves: Ray still starts a minimal
    dashboard head and the per-node dashboard agent then), ours (everything else: the driver,
    consumer actors, side actors; a baseline's processes), all."""
    groups: dict[str, dict[str, float]] = {}
    consumers = 0
    for group, _pid, pss in sorted(rows, key=lambda row: row[1]):
        if group == "consumer actor":
            consumers += 1
            group = f"consumer actor {consumers}"
        entry = groups.setdefault(group, {"processes": 0, "pss_mib": 0.0})
        entry["processes"] += 1
        entry["pss_mib"] += pss / 2**20
    ray = sum(g["pss_mib"] for name, g in groups.items() if name.startswith("Ray:"))
    dashboard = groups.get("Ray: dashboard modules", {}).get("pss_mib", 0.0)
    return {
        "groups": groups,
        "ray_mib": ray,
        "ray_without_dashboard_mib": ray - dashboard,
        "ours_mib": sum(g["pss_mib"] for name, g in groups.items() if not name.startswith("Ray:")),
        "total_mib": sum(g["pss_mib"] for g in groups.values()),
    }


class PssSampler(TreeSampler[dict[str, object]]):
    """A tree's PSS by group (reading smaps is slow: every ``every_s``); ``peak`` is the sample
    with the largest total."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        super().__init__(lambda: grouped(pss_by_process(pid)), every_s)

    @property
    def peak(self) -> dict[str, object] | None:
        return max(self.samples, key=lambda s: float(s["total_mib"]), default=None)  # type: ignore[arg-type]


def ray_bare(dashboard: bool) -> dict[str, object]:
    """A bare local Ray, as ``streaminfer run`` starts it, measured once it has settled."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    ray.init(include_dashboard=dashboard, logging_level=logging.WARNING)
    seconds = time.perf_counter() - started
    time.sleep(5)  # the dashboard's modules start after init returns
    try:
        rows = [row for row in pss_by_process(os.getpid()) if row[0] != "driver"]
        return {**grouped(rows), "init_s": seconds}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(ray_bare(dashboard="--no-dashboard" not in sys.argv[1:])))
