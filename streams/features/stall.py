"""Noticing a feature worker that has stopped consuming, and setting it going again.

Now and then a Faust worker (faust-streaming 0.15) restarted mid-stream on Apache Kafka comes
out of its recovery and handles nothing more: its fetcher keeps asking the Kafka consumer for
records and gets none. Nothing fails and nothing is logged; the worker sits behind its
partitions for ever. (faust-streaming#216 was one race of this family; this one is not found.)

The watch is deliberately dumb: a source partition that is behind, outside a rebalance or a
recovery, whose committed offset has not moved for ``stall_after_s``, is stuck. Then it does
what Faust does at the end of a recovery (resume the source partitions, seek them to the
committed offsets, resume the flow, make sure the fetcher runs) and logs where every task
waits. If that leaves a partition stuck twice in a row, the process replaces itself with a
fresh run of the same command, as a liveness probe would have it restarted. Records read again
are harmless: the join and the aggregates recognise requests they already hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RESUME, RESTART = "resume", "restart"


@dataclass
class StallWatch:
    """Per source partition: behind, and its committed offset not moving (Faust commits every
    few seconds while it handles anything), for ``stall_after_s``. Per partition, because a
    worker can stall on some partitions while others flow."""

    stall_after_s: float
    max_resumes: int = 2
    """Resumes in a row that change nothing before the worker restarts its process instead."""

    resumes: int = 0
    restarts: int = 0
    _seen: dict[Any, tuple[int, float]] = field(default_factory=dict, repr=False)
    _in_a_row: int = field(default=0, repr=False)

    def check(self, now: float, committed: dict[Any, int], behind: dict[Any, int], busy: bool) -> str | None:
        """``RESUME`` or ``RESTART`` when some partition is stuck; ``RESTART`` once
        ``max_resumes`` resumes in a row left a partition stuck."""
        stuck = False
        for tp, offset in committed.items():
            last = self._seen.get(tp)
            if busy or behind.get(tp, 0) <= 0 or last is None or last[0] != offset:
                self._seen[tp] = (offset, now)
            elif now - last[1] >= self.stall_after_s:
                stuck = True
        if not stuck:
            if not busy and not any(behind.values()):
                self._in_a_row = 0
            return None
        for tp, (offset, _) in list(self._seen.items()):
            self._seen[tp] = (offset, now)  # the resumed worker gets the same time again
        self._in_a_row += 1
        if self._in_a_row > self.max_resumes:
            self.restarts += 1
            return RESTART
        self.resumes += 1
        return RESUME


def source_offsets(app: Any, highwaters: dict[Any, int]) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per assigned source partition (not changelogs): its committed offset, and how far the
    high watermark is past it. ``highwaters`` keeps the last one each partition reported: a
    seek clears the consumer's, and a stuck consumer never fetches a new one."""
    consumer = app.consumer
    committed, behind = {}, {}
    for tp in consumer.assignment():
        if tp.topic in app.tables.changelog_topics:
            continue
        highwater = consumer.highwater(tp)
        if highwater is not None:
            highwaters[tp] = highwater
        offset = consumer._committed_offset.get(tp)  # Faust keeps no public accessor
        if offset is None or tp not in highwaters:
            continue
        committed[tp] = offset
        behind[tp] = max(0, highwaters[tp] - offset)
    return committed, behind


async def resume_streams(app: Any, behind: dict[Any, int]) -> None:
    """Faust's own end-of-recovery steps (``Recovery._resume_streams``), again."""
    consumer = app.consumer
    log.warning("feature worker stuck: %d records behind on %s, committed offsets not moving; "
                "resuming its partitions from the committed offsets (paused %s, active %s)",
                sum(behind.values()), sorted(f"{tp.topic}/{tp.partition}" for tp, n in behind.items() if n),
                len(consumer._paused_partitions), len(consumer._get_active_partitions()))
    log.warning("where the worker's tasks wait:\n%s", waiting_tasks())
    sources = {tp for tp in consumer.assignment() if tp.topic not in app.tables.changelog_topics}
    consumer._buffered_partitions.difference_update(sources)
    consumer.resume_partitions(sources)
    await consumer.perform_seek()
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()


def restart_process() -> None:
    """Replace this process with a fresh run of the same command (same pid, same log). As
    after a crash: the group reassigns the partitions, the tables recover from their
    changelogs, and what was not committed is read again."""
    log.error("feature worker still stuck after resuming it; restarting the process: %s", " ".join(sys.orig_argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def waiting_tasks() -> str:
    """One line per task of this loop: where it waits, innermost first (its await chain,
    through the tasks it awaits)."""
    lines = []
    for task in asyncio.all_tasks():
        steps = list(_await_chain(task.get_coro()))
        lines.append(f"  {task.get_name()}: {' <- '.join(reversed(steps[-12:]))}")
    return "\n".join(sorted(lines))


def _await_chain(awaitable: Any) -> Any:
    """Where a coroutine waits: its frames and those of what it awaits, outermost first; the
    last step names the object it finally waits on when that is not a coroutine."""
    for _ in range(60):
        if awaitable is None:
            return
        if isinstance(awaitable, asyncio.Task):
            awaitable = awaitable.get_coro()
            continue
        frame = (getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
                 or getattr(awaitable, "ag_frame", None))
        if frame is None:
            yield f"[{type(awaitable).__name__}]"
            return
        yield f"{frame.f_code.co_name}@{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}"
        awaitable = (getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
                     or getattr(awaitable, "ag_await", None))
