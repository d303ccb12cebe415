"""Training sets: every logged prediction with the entity's features as they were just before
its request arrived, through Feast's point-in-time join on the offline store.

"Just before" (one millisecond earlier than the request) is deliberate: at serving time the
online store could not yet hold the request's own contribution, so a training row that counted
it would leak the future into the features.
"""

from __future__ import annotations

import pandas as pd

from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import (
    ENTITY_KEY,
    LOG_VIEW,
    REQUEST_KEY,
    TIMESTAMP,
    offline_path,
    open_store,
    stats_features,
)


def prediction_log(settings: FeatureSettings) -> pd.DataFrame:
    """The logged predictions, one row per request."""
    return pd.read_parquet(offline_path(settings, LOG_VIEW))


def training_frame(settings: FeatureSettings) -> pd.DataFrame:
    """Logged predictions of requests that named an entity, joined point-in-time with the
    entity's window features; ``event_timestamp`` is the request's time."""
    log = prediction_log(settings)
    log = log[log[ENTITY_KEY] != ""]
    if log.empty:
        return log
    entity_df = log[[REQUEST_KEY, ENTITY_KEY, TIMESTAMP]].copy()
    entity_df[TIMESTAMP] = entity_df[TIMESTAMP] - pd.Timedelta(milliseconds=1)
    joined = open_store(settings).get_historical_features(entity_df=entity_df, features=stats_features(settings)).to_df()
    names = [ref.split(":", 1)[1] for ref in stats_features(settings)]
    # the file store leaves out entity rows with no feature row before them: keep every prediction
    # (an entity's first request has no history: its features are missing, not zero)
    return (
        log.merge(joined[[REQUEST_KEY, *names]], on=REQUEST_KEY, how="left")
        .sort_values(TIMESTAMP, kind="stable")
        .reset_index(drop=True)
    )
