"""Seeded request streams with a known shift, for ``demo --drift`` and for pinning detectors.

Rows are drawn with replacement from the model's training reference, so before the shift the
stream has exactly the reference distribution; from ``shift_at`` on, the chosen features are
moved by ``by_std`` of their reference standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Shift:
    features: tuple[str, ...]
    at_row: int
    by_std: float = 1.5


def drifting_rows(reference: pd.DataFrame, rows: int, shift: Shift | None, seed: int = 0) -> np.ndarray:
    """``rows`` × features, float32 like the model's input."""
    return drifting_stream(reference, rows, shift, seed)[0]


def drifting_stream(
    reference: pd.DataFrame, rows: int, shift: Shift | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The rows, and which reference row each was drawn from (to look its label up)."""
    rng = np.random.default_rng(seed)
    values = reference.to_numpy(dtype=np.float64)
    picks = rng.integers(0, len(values), size=rows)
    drawn = values[picks].copy()
    if shift is not None:
        columns = [reference.columns.get_loc(name) for name in shift.features]
        drawn[shift.at_row :, columns] += shift.by_std * values[:, columns].std(axis=0)
    return drawn.astype(np.float32), picks


def default_shift(feature_names: list[str], rows: int) -> Shift:
    """The demo's shift: three of the features, from half-way through the stream."""
    picks = [name for name in ("mean radius", "mean texture", "worst area") if name in feature_names]
    return Shift(tuple(picks or feature_names[:3]), rows // 2)
