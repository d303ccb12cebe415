"""Per-entity aggregates over time windows, as pure functions over a JSON-able state.

The state of one entity keeps, per ``step_s`` bucket of event time, the requests in it (id,
timestamp, score). Two features come out of it, as of any time ``t``:

* tumbling: the requests in ``t``'s bucket up to ``t``;
* hopping: the requests in the ``size_s / step_s`` buckets that end with ``t``'s, up to ``t``.

Every change yields the feature rows to write: one as of the new request's time and, when the
request arrived after later ones (an entity's requests come through several partitions), a
corrected row for each later time whose windows include it. So the offline store holds, for
every request time, the features exactly as of that time: what point-in-time joins need.

Keeping the request ids makes applying an event idempotent: a Faust worker restarted mid-stream
re-reads what it had not committed, and nothing counts twice. A request later than the allowed
lateness behind the entity's newest is ignored, and older buckets are dropped, so memory per
entity stays bounded by its traffic over the lateness plus one hopping window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

State = dict[str, Any]


@dataclass(frozen=True)
class WindowSpec:
    step_s: int = 60
    """Tumbling window, and the hop of the hopping one."""

    size_s: int = 300
    """Hopping window length: a multiple of ``step_s``."""

    lateness_s: int = 600
    """How far behind the entity's newest request one may arrive and still count. Requests of
    one entity come through several partitions, and a backfill or a lagging partition delivers
    them minutes apart in event time."""

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.size_s < self.step_s or self.size_s % self.step_s:
            raise ValueError(f"hopping window {self.size_s} s must be a positive multiple of its step {self.step_s} s")
        if self.lateness_s < 0:
            raise ValueError(f"allowed lateness must be 0 s or more, got {self.lateness_s}")

    @property
    def buckets(self) -> int:
        return self.size_s // self.step_s

    @property
    def late_buckets(self) -> int:
        return -(-self.lateness_s // self.step_s)

    def bucket_of(self, ts_ms: int) -> int:
        return ts_ms // (self.step_s * 1000)

    def feature_names(self) -> list[str]:
        return [f"requests_{self.step_s}s", f"mean_score_{self.step_s}s", f"requests_{self.size_s}s", f"mean_score_{self.size_s}s"]


def empty_state() -> State:
    return {"buckets": {}, "latest_ms": 0}


@dataclass(frozen=True)
class Update:
    changed: bool
    """Whether the state changed (and must be saved)."""

    times: list[int]
    """Times whose feature rows to write (again)."""


def apply(state: State, spec: WindowSpec, request_id: str, ts_ms: int, score: float) -> Update:
    """Add one scored request. A request seen before changes nothing but yields the same times
    as when it was added (and any later ones that arrived since): after a crash its rows may be
    lost while the state that holds it was saved, and a late request's rows include corrections
    of later times, the entity's current row among them. One older than every window still kept
    yields nothing."""
    latest = max(state["latest_ms"], ts_ms)
    bucket = spec.bucket_of(ts_ms)
    if bucket < spec.bucket_of(latest) - spec.late_buckets:
        return Update(False, [])
    key = str(bucket)  # JSON object keys are strings; keep them so across a changelog restore
    entries = state["buckets"].get(key, [])
    if any(entry[0] == request_id for entry in entries):
        return Update(False, [ts_ms, *_later_times(state, spec, bucket, ts_ms)])
    state["buckets"][key] = [*entries, [request_id, ts_ms, score]]
    state["latest_ms"] = latest
    _drop_expired(state, spec)
    return Update(True, [ts_ms, *_later_times(state, spec, bucket, ts_ms)])


def _later_times(state: State, spec: WindowSpec, bucket: int, ts_ms: int) -> list[int]:
    """The times of the later requests whose windows include a request at ``ts_ms``."""
    return sorted({
        entry[1]
        for k, kept in state["buckets"].items()
        if bucket <= int(k) < bucket + spec.buckets
        for entry in kept
        if entry[1] > ts_ms
    })


def _drop_expired(state: State, spec: WindowSpec) -> None:
    """Requests are accepted up to the allowed lateness behind the newest; the rows a late one
    changes have windows reaching one more hopping window back, so buckets are kept that long."""
    oldest_kept = spec.bucket_of(state["latest_ms"]) - spec.late_buckets - spec.buckets + 1
    for key in [k for k in state["buckets"] if int(k) < oldest_kept]:
        del state["buckets"][key]


def features_at(state: State, spec: WindowSpec, ts_ms: int) -> dict[str, float | int]:
    """The feature values as of ``ts_ms`` (requests up to and including that time)."""
    current = spec.bucket_of(ts_ms)
    count, total, hop_count, hop_total = 0, 0.0, 0, 0.0
    for key, entries in state["buckets"].items():
        bucket = int(key)
        if not current - spec.buckets < bucket <= current:
            continue
        for _, ts, score in entries:
            if ts > ts_ms:
                continue
            hop_count += 1
            hop_total += score
            if bucket == current:
                count += 1
                total += score
    names = spec.feature_names()
    return {
        names[0]: count,
        names[1]: total / count if count else 0.0,
        names[2]: hop_count,
        names[3]: hop_total / hop_count if hop_count else 0.0,
    }


def features(state: State, spec: WindowSpec) -> dict[str, float | int]:
    """The feature values as of the entity's latest request: what the online store holds."""
    return features_at(state, spec, state["latest_ms"])
