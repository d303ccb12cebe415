"""Pairing a request with its prediction, as a pure step the Faust agent applies to its table.

A crash must not lose a pair. Faust sends a table's changelog record and the agent's outputs
through one producer, to different partitions, and commits the input offset only after both
have left; a SIGKILL in between can leave the changelog holding a change whose outputs never
left, and the input that made it is read again from the committed offset. So every step must
give the same outputs when replayed against any state the crash left, up to and including the
state after the whole stream. A join that deleted the waiting half as the second half arrived
and sent the outputs in the same step fails that: replayed after the deletion was saved, the
second half finds nothing waiting, waits for ever, and the request is lost (neither counted in
its entity's features nor logged).

So the join takes two steps, the decision travelling as a record, not as table state:

1. the second half of a pair, its first half waiting, sends a ``pair`` part (both halves) to
   ``features.joinable`` under the same key, and changes nothing. Replayed, it finds the first
   half still waiting (and sends the pair again), or finds it gone, which only a ``pair`` part
   that is later in the same partition does, and holds itself until that part is read again;
2. a ``pair`` part deletes what waits under its key and yields the prediction log and the scored
   request. Replayed, it yields them again.

Outputs sent twice are harmless: the aggregates recognise a request they hold, and the
prediction log keeps one row per request id.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaminfer.streams.features.records import Part, PredictionLog, Scored

PAIR = "pair"


@dataclass(frozen=True)
class Step:
    hold: Part | None
    """What the table should hold under the key afterwards (None: nothing)."""

    changed: bool
    """Whether ``hold`` differs from what was held (a table write to make)."""

    pair: Part | None = None
    """A ``pair`` part to send to ``features.joinable``, under the same key."""

    log: PredictionLog | None = None
    scored: Scored | None = None
    """Keyed by entity; None for a request that names none."""


def step(held: Part | None, part: Part) -> Step:
    """What one part does, given the part held under its request id."""
    if part.kind == "dead_letter":  # no prediction will come: drop the waiting half
        return Step(None, held is not None)
    if part.kind == PAIR:
        return Step(None, held is not None, log=_log(part), scored=_scored(part))
    if held is None or held.kind == part.kind:
        return Step(part, True)
    request, prediction = (part, held) if part.kind == "request" else (held, part)
    return Step(held, False, pair=pair_of(request, prediction))


def pair_of(request: Part, prediction: Part) -> Part:
    return Part(PAIR, request.request_id, request.ts_ms, entity=request.entity,
                model=prediction.model or request.model or "", inputs=request.inputs or "[]",
                version=prediction.version or "", score=prediction.score or 0.0)


def _log(pair: Part) -> PredictionLog:
    return PredictionLog(pair.request_id, pair.entity or "", pair.ts_ms, pair.model or "", pair.version or "",
                         pair.inputs or "[]", pair.score or 0.0)


def _scored(pair: Part) -> Scored | None:
    return Scored(pair.request_id, pair.entity, pair.ts_ms, pair.score or 0.0) if pair.entity else None
