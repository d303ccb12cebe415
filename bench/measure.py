"""CPU and memory of a whole process tree (a system under test with all its children)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Self, TypeVar

import psutil

T = TypeVar("T")


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


class TreeSampler(Generic[T]):
    """Takes ``measure()`` in a thread: once at once, then every ``every_s``, and a last time
    when stopped (a context manager)."""

    def __init__(self, measure: Callable[[], T], every_s: float) -> None:
        self._measure, self._every_s = measure, every_s
        self.samples: list[T] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(self._measure())
            if self._stop.wait(self._every_s):
                self.samples.append(self._measure())
                return


class PeakMemory(TreeSampler[tuple[float, int]]):
    """A tree's resident memory: the peak, and the series for flatness checks."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        super().__init__(lambda: (time.time(), tree_rss_bytes(pid)), every_s)

    @property
    def peak_bytes(self) -> int:
        return max((rss for _, rss in self.samples), default=0)
