"""Noticing a feature worker that has stopped consuming, and setting it going again.

Now and then (a few in a hundred kill-and-restart runs on Apache Kafka) a Faust worker
(faust-streaming 0.15) restarted mid-stream comes out of its recovery and handles nothing more,
logging nothing. In the stalls seen, the Kafka client's position was already at the end of the
source partitions while Faust had handled none of their records (no read offset in this
process): fetched, never handed to its streams, and never read again (a candidate: Faust drops
what arrives while its flow is stopped for a rebalance). Seeking partitions without a committed
offset to their beginning was tried and made things worse: in one run of six, commits then
stuck behind a hole (acknowledged offsets never consecutive with the committed one), most
likely from records read a second time while the first were in hand. And later stalls had
committed offsets too.

So this watch, deliberately dumb: a source partition that is behind, outside a rebalance or a
recovery, whose committed offset has not moved for ``stall_after_s``, is stuck. It logs each
partition's offsets and where every task waits, and the process replaces itself with a fresh
run of the same command, as a liveness probe would have it restarted: a fresh process reads
from the committed offsets again. (Redoing Faust's end-of-recovery steps in place, resuming and
seeking the source partitions, was tried and never got a stuck worker going.) Records read
again are harmless: every step of the app gives the same outputs when replayed
(``streams.features.faust_app``).

The watch is also what turns a dropped record into a replay rather than a loss: Faust's fetch
loop hands a record to its stream only if its flow is not stopped first, and moves its read
offset on either way; the app's consumer never commits past such a record
(``faust_app.head_handled``), so its partition's commits stop, and this watch restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

@dataclass
class StallWatch:
    """Per source partition: behind, and its committed offset not moving (Faust commits every
    few seconds while it handles anything), for ``stall_after_s``. Per partition, because a
    worker can stall on some partitions while others flow."""

    stall_after_s: float
    restarts: int = 0
    _seen: dict[Any, tuple[int, float]] = field(default_factory=dict, repr=False)

    def check(self, now: float, committed: dict[Any, int], behind: dict[Any, int], busy: bool) -> bool:
        """True when some partition is stuck: the worker should restart its process."""
        stuck = False
        for tp, offset in committed.items():
            last = self._seen.get(tp)
            if busy or behind.get(tp, 0) <= 0 or last is None or last[0] != offset:
                self._seen[tp] = (offset, now)
            elif now - last[1] >= self.stall_after_s:
                stuck = True
        if stuck:
            self.restarts += 1
        return stuck


async def source_offsets(app: Any, highwaters: dict[Any, int], timeout_s: float = 10.0) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per assigned source partition (not changelogs): its committed offset, and how far the
    high watermark is past it. ``highwaters`` keeps the last one each partition reported: a
    seek clears the consumer's. A partition the consumer has never fetched has none at all (the
    stall seen most: a restarted worker that never fetches again), so the broker is asked."""
    consumer = app.consumer
    sources = [tp for tp in consumer.assignment() if tp.topic not in app.tables.changelog_topics]
    for tp in sources:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            highwaters[tp] = highwater
    # Faust keeps no public accessor; None: never committed
    committed = {tp: consumer._committed_offset.get(tp) or 0 for tp in sources}
    never_fetched = [tp for tp in sources if tp not in highwaters]
    unanswered: dict[Any, int] = {}
    if never_fetched:
        asked = await _broker_highwaters(consumer, never_fetched, timeout_s)
        if asked is None:  # too wedged to ask: one record behind, so the watch notices nothing moves
            unanswered = {tp: committed[tp] + 1 for tp in never_fetched}
        else:
            highwaters.update(asked)
    ends = {**highwaters, **unanswered}
    return committed, {tp: max(0, ends.get(tp, committed[tp]) - committed[tp]) for tp in sources}


async def _broker_highwaters(consumer: Any, partitions: list[Any], timeout_s: float) -> dict[Any, int] | None:
    """End offsets from the broker; None when the consumer could not ask within ``timeout_s``."""
    try:
        return dict(await asyncio.wait_for(consumer.highwaters(*partitions), timeout_s))
    except Exception as exc:  # noqa: BLE001 - failing to ask, a timeout too, is a symptom to act on
        log.warning("feature worker: could not ask the broker for the end of %d partitions: %r", len(partitions), exc)
        return None


def report_stall(app: Any, behind: dict[Any, int]) -> None:
    """What the stuck worker looks like: the partitions behind, each one's offsets, and where
    every task waits (the evidence for finding the cause)."""
    consumer = app.consumer
    log.warning("feature worker stuck: %d records behind on %s, committed offsets not moving "
                "(paused %s, active %s)",
                sum(behind.values()), sorted(f"{tp.topic}/{tp.partition}" for tp, n in behind.items() if n),
                len(consumer._paused_partitions), len(consumer._get_active_partitions()))
    try:
        log.warning("the stuck worker's source partitions:\n%s", partition_states(app))
    except Exception:  # a diagnostic must never stop the remedy
        log.exception("could not describe the stuck worker's partitions")
    log.warning("where the worker's tasks wait:\n%s", waiting_tasks())


def partition_states(app: Any) -> str:
    """One line per assigned source partition: Faust's committed and read offsets, what it holds
    acknowledged but uncommitted, its gaps, and the Kafka client's own position and buffers. They
    tell a worker that never fetched (position at the committed offset) from one whose records
    were fetched and not handled (position at the high watermark) from one that cannot commit
    (acknowledged offsets behind a hole). Read from the consumer's thread without a lock: a
    diagnostic, not a decision."""
    consumer = app.consumer
    client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    fetcher = getattr(client, "_fetcher", None)
    assignment = getattr(getattr(getattr(client, "_subscription", None), "subscription", None), "assignment", None)
    active = consumer._get_active_partitions()
    lines = []
    for tp in sorted(consumer.assignment()):
        if tp.topic in app.tables.changelog_topics:
            continue
        acked = list(consumer._acked.get(tp, ()))
        state = assignment.state_value(tp) if assignment is not None else None
        position = state.position if state is not None and state.has_valid_position else None
        lines.append(
            f"  {tp.topic}/{tp.partition}: committed {consumer._committed_offset.get(tp)} "
            f"read {consumer._read_offset.get(tp)} highwater {consumer.highwater(tp)} "
            f"acked {len(acked)} [{min(acked, default='')}..{max(acked, default='')}] "
            f"gaps {sorted((i.begin, i.end) for i in consumer._gap.get(tp, ()))[:3]} "
            f"active {tp in active} position {position} paused {getattr(state, 'paused', None)} "
            f"buffered {fetcher is not None and tp in fetcher._records}")
    in_flight = getattr(fetcher, "_in_flight", None)
    lines.append(f"  fetches in flight to nodes {sorted(in_flight) if in_flight is not None else '?'}; "
                 f"flow active {consumer.flow_active}; unacked {len(consumer._unacked_messages)}")
    return "\n".join(lines)


def restart_process() -> None:
    """Replace this process with a fresh run of the same command (same pid, same log). As
    after a crash: the group reassigns the partitions, the tables recover from their
    changelogs, and what was not committed is read again."""
    log.error("feature worker stuck; restarting the process: %s", " ".join(sys.orig_argv))
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
