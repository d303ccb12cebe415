"""CPU and memory of a whole process tree (a system under test with all its children)."""

from __future__ import annotations

import threading
import time

import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and every living descendant (children's finished
    descendants are counted by the OS in ``children_*`` times)."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakMemory:
    """Samples a tree's resident memory in a thread: the peak, and the series for flatness checks."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self._pid = pid
        self._every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_rss_bytes(self._pid)))
            self._stop.wait(self._every_s)

    @property
    def peak_bytes(self) -> int:
        return max((rss for _, rss in self.samples), default=0)
