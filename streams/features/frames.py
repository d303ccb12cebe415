"""Rows from the stream as the data frames Feast's push sources take."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from streaminfer.streams.features.records import FeatureRow, PredictionLog
from streaminfer.streams.features.store import CREATED, ENTITY_KEY, REQUEST_KEY, TIMESTAMP

CURRENT = "current"


def stats_frame(rows: Sequence[FeatureRow], feature_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            ENTITY_KEY: [r.entity for r in rows],
            TIMESTAMP: pd.to_datetime([r.ts_ms for r in rows], unit="ms", utc=True),
            CREATED: pd.to_datetime([r.created_us for r in rows], unit="us", utc=True),
            CURRENT: [r.current for r in rows],
            **{name: [r.values.get(name, 0) for r in rows] for name in feature_names},
        }
    )
    for name in feature_names:
        if name.startswith("requests_"):
            frame[name] = frame[name].astype("int64")
    return frame


def latest_per_entity(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per entity, as of its newest request and the latest correction of it: what the
    online store should hold. Some online stores (SQLite) keep the last row written rather than
    the newest, so rows as of older times never go there."""
    current = frame[frame[CURRENT]]
    return current.sort_values([TIMESTAMP, CREATED], kind="stable").drop_duplicates(ENTITY_KEY, keep="last")


def online_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row per entity, stamped with when it was computed: online stores keep the row
    with the newest timestamp (Redis ignores one with an equal timestamp), and a correction of
    the current row has the same event time as the row it corrects."""
    latest = latest_per_entity(frame)
    return latest.assign(**{TIMESTAMP: latest[CREATED]}).drop(columns=[CURRENT])


def offline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[CURRENT])


def log_frame(logs: Sequence[PredictionLog]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            REQUEST_KEY: [r.request_id for r in logs],
            TIMESTAMP: pd.to_datetime([r.ts_ms for r in logs], unit="ms", utc=True),
            ENTITY_KEY: [r.entity for r in logs],
            "model": [r.model for r in logs],
            "version": [r.version for r in logs],
            "inputs": [r.inputs for r in logs],
            "score": [float(r.score) for r in logs],
        }
    )
