"""The monitor's checkpoint: detector, window and join state with the offsets it reflects.

State and offsets are written together, atomically (a temporary file renamed over the old one),
so a restarted monitor resumes from exactly the record after the last one its state has seen:
detectors neither start blind nor see a record twice. Events emitted after the last checkpoint
are emitted again after a crash (at-least-once), with the same content, so consumers of
``monitoring.drift`` can recognise them.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
FILE_NAME = "checkpoint.pkl"


def save_checkpoint(directory: Path, state: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        pickle.dump({"format": FORMAT, "state": state}, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def load_checkpoint(directory: Path) -> Any | None:
    """The saved state, or None when there is none. A checkpoint this version cannot read is
    set aside (renamed ``.unreadable``) with a warning rather than silently overwritten."""
    path = directory / FILE_NAME
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            saved = pickle.load(handle)
        if saved.get("format") != FORMAT:
            raise ValueError(f"format {saved.get('format')!r}, expected {FORMAT}")
        return saved["state"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is handled the same way
        aside = path.with_suffix(".unreadable")
        os.replace(path, aside)
        log.warning("monitor checkpoint %s unreadable (%s); moved to %s, starting from the beginning", path, exc, aside)
        return None
