"""Per-entity aggregates over time windows, as pure functions over a JSON-able state.

The state of one entity is a set of buckets, one per ``step_s`` of event time, each holding the
count, the score sum and the ids of the requests in it. Two features come out of it:

* tumbling: the bucket that holds the entity's latest event;
* hopping: the ``size_s / step_s`` buckets that end with it (a window of ``size_s`` that hops
  every ``step_s``).

Keeping the request ids makes applying an event idempotent: a Faust worker restarted mid-stream
re-reads what it had not committed and re-forwards what it had already forwarded, and neither
counts twice. Buckets older than the hopping window are dropped, so memory per entity stays
bounded by the traffic of one window.
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

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.size_s < self.step_s or self.size_s % self.step_s:
            raise ValueError(f"hopping window {self.size_s} s must be a positive multiple of its step {self.step_s} s")

    @property
    def buckets(self) -> int:
        return self.size_s // self.step_s

    def bucket_of(self, ts_ms: int) -> int:
        return ts_ms // (self.step_s * 1000)

    def feature_names(self) -> list[str]:
        return [f"requests_{self.step_s}s", f"mean_score_{self.step_s}s", f"requests_{self.size_s}s", f"mean_score_{self.size_s}s"]


def empty_state() -> State:
    return {"buckets": {}, "latest_ms": 0}


def apply(state: State, spec: WindowSpec, request_id: str, ts_ms: int, score: float) -> bool:
    """Add one scored request; False when it was already counted or is older than every window
    still kept (too late to change a feature anyone can read)."""
    latest = max(state["latest_ms"], ts_ms)
    bucket = spec.bucket_of(ts_ms)
    if bucket <= spec.bucket_of(latest) - spec.buckets:
        return False
    key = str(bucket)  # JSON object keys are strings; keep them so across a changelog restore
    count, total, ids = state["buckets"].get(key, (0, 0.0, []))
    if request_id in ids:
        return False
    state["buckets"][key] = (count + 1, total + score, [*ids, request_id])
    state["latest_ms"] = latest
    _drop_expired(state, spec)
    return True


def _drop_expired(state: State, spec: WindowSpec) -> None:
    oldest_kept = spec.bucket_of(state["latest_ms"]) - spec.buckets + 1
    for key in [k for k in state["buckets"] if int(k) < oldest_kept]:
        del state["buckets"][key]


def features(state: State, spec: WindowSpec) -> dict[str, float | int]:
    """The feature values as of the entity's latest event."""
    current = spec.bucket_of(state["latest_ms"])
    buckets = state["buckets"]
    count, total = _sum(buckets, [current])
    hop_count, hop_total = _sum(buckets, range(current - spec.buckets + 1, current + 1))
    names = spec.feature_names()
    return {
        names[0]: count,
        names[1]: total / count if count else 0.0,
        names[2]: hop_count,
        names[3]: hop_total / hop_count if hop_count else 0.0,
    }


def _sum(buckets: dict[str, Any], keys: Any) -> tuple[int, float]:
    count, total = 0, 0.0
    for key in keys:
        if (entry := buckets.get(str(key))) is not None:
            count += entry[0]
            total += entry[1]
    return count, total
