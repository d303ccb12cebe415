"""Appending to the offline store's files, keeping one row per key.

Feast's file offline store would append pushed rows as they come; its point-in-time join then
picks among rows with the same entity and event time in no reliable order (the created-time
tie-break relies on a sort that is not stable). A correction (a row recomputed after a late
request) must replace the row it corrects, so the sink writes the offline files itself: the
file is rewritten with the newest row per key, to a temporary file renamed over the old one, so
a training job reading it never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def append_rows(path: Path, rows: pd.DataFrame, keys: list[str], newest_by: str | None = None) -> None:
    """Add ``rows``; of rows with equal ``keys`` keep the one with the largest ``newest_by``
    (the first written when ``newest_by`` is None: a repeat of the same fact)."""
    existing = pq.read_table(path)
    schema = existing.schema
    combined = pd.concat([existing.to_pandas(), rows[schema.names]], ignore_index=True)
    if newest_by is not None:
        combined = combined.sort_values(newest_by, kind="stable").drop_duplicates(keys, keep="last")
    else:
        combined = combined.drop_duplicates(keys, keep="first")
    table = pa.Table.from_pandas(combined, schema=schema, preserve_index=False)
    partial = path.with_suffix(".parquet.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)
