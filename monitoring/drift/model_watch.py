"""What the monitor keeps per model version, and the whole state it checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from streaminfer.monitoring.drift.detectors import Reference, SampleDrift
from streaminfer.monitoring.drift.windows import WindowDrift
from streaminfer.monitoring.label_join import LabelJoin
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.schemas.signature import Signature
from streaminfer.workers.models.repository import ModelRepository, ModelVersion


@dataclass
class ModelWatch:
    """Everything watched for one model version."""

    entry_name: str
    version: str
    signature: Signature
    input_name: str | None
    sample: SampleDrift
    window: WindowDrift | None
    columns: tuple[int, ...] | None = None
    """The input's columns watched (None: all): personal features, those the model's privacy
    policy drops or hashes, are left out of the detectors, the windows, their reports and the
    checkpoint."""

    def watched(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.columns is None else rows[:, list(self.columns)]

    def restore(self, repository: ModelRepository) -> None:
        if self.window is not None:
            self.window.restore_reference(reference_frame(repository.load(self.entry_name, self.version)))


@dataclass
class MonitorState:
    """What the checkpoint holds: all watches, the label join, and the next offset per partition."""

    watches: dict[tuple[str, str], ModelWatch] = field(default_factory=dict)
    join: LabelJoin | None = None
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    joined_at_last_event: dict[tuple[str, str], int] = field(default_factory=dict)
    drift_events: int = 0
    records: dict[str, int] = field(default_factory=dict)
    source: str = ""
    """Bootstrap and topics the offsets belong to."""


def reference_frame(entry: ModelVersion) -> pd.DataFrame | None:
    """The training sample's feature columns, or None when the model ships no reference."""
    if not entry.reference_path.is_file():
        return None
    frame = pd.read_parquet(entry.reference_path)
    names = entry.metadata.feature_names or [c for c in frame.columns if c != "target"]
    return frame[[n for n in names if n not in _personal(entry)]].astype("float64")


def _personal(entry: ModelVersion) -> frozenset[str]:
    privacy = entry.metadata.privacy
    return privacy.personal_features() if privacy is not None else frozenset()


def watched_columns(entry: ModelVersion) -> tuple[int, ...] | None:
    """Indices of the matrix input's columns that are not personal; None when all are watched."""
    personal = _personal(entry)
    if not personal:
        return None
    return tuple(i for i, name in enumerate(entry.metadata.feature_names) if name not in personal)


def new_watch(entry: ModelVersion, settings: MonitorSettings) -> ModelWatch:
    """Detectors and a window for a model version, standardised by its training reference."""
    inputs = entry.metadata.signature.inputs
    matrix_input = inputs[0] if len(inputs) == 1 and len(inputs[0].shape) == 2 else None
    reference = reference_frame(entry)
    columns = watched_columns(entry)
    if reference is not None:
        sample_reference = Reference.from_rows(list(reference.columns), reference.to_numpy())
    elif matrix_input is not None and matrix_input.shape[1] > 0:
        sample_reference = Reference.identity(matrix_input.shape[1] if columns is None else len(columns))
    else:
        sample_reference = Reference([], np.zeros(0), np.ones(0))
    window = None
    if reference is not None and matrix_input is not None:
        window = WindowDrift(
            entry.name, entry.version, reference, settings.window_rows, settings.window_seconds,
            settings.window_min_rows, settings.window_method, settings.window_drift_threshold,
            settings.reports_dir, max_rows=settings.window_max_rows, seed=settings.seed,
        )
    sample = SampleDrift(
        entry.name, entry.version, sample_reference, settings.detectors_for(entry.name),
        settings.detector_params, settings.seed,
    )
    input_name = matrix_input.name if matrix_input else None
    return ModelWatch(entry.name, entry.version, entry.metadata.signature, input_name, sample, window, columns)
