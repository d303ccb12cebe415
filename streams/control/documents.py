"""The registry as documents: what the driver publishes on the control topic, keyed by path.

- ``<model>/<file>``: each file beside a model's versions, as it is (``aliases.json``,
  ``traffic.json``, ``tags.json``, any other);
- ``<model>/<file>.jsonl/<n>``: a line-per-record file (``audit.jsonl``) in segments of whole
  lines of at most ``SEGMENT_BYTES`` each, numbered from 000000. The log only grows, so an append
  changes the last segment alone: a promotion sends a few hundred bytes however long the history,
  and no record nears the broker's message size limit (1 MiB by default). The file is cut after
  its last complete line, so an append in progress is never published half;
- ``<model>/<version>/manifest.json``: one per version with metadata, its metadata and the
  sha256 of its other files (``workers.models.distribution.VersionManifest``).

A record without a value (a tombstone) says the document is gone. Versions are published before
the documents that may name them, so a mirror has a version before an alias points at it.

>>> publish_order(["m/aliases.json", "m/1.0.0/manifest.json"])
['m/1.0.0/manifest.json', 'm/aliases.json']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from streaminfer.workers.models.distribution import (
    MANIFEST_DOCUMENT,
    VersionManifest,
    file_digest,
    is_plain_name,
    version_files,
)
from streaminfer.workers.models.repository import METADATA_FILE

Documents = dict[str, bytes]
Stamp = tuple[int, int, int]


SEGMENT_BYTES = 256 * 1024
"""Most bytes of one segment of a line-per-record file (a longer line is a segment of its own)."""

LINES_SUFFIX = ".jsonl"


def is_manifest(key: str) -> bool:
    return key.endswith(f"/{MANIFEST_DOCUMENT}") and key.count("/") == 2


def is_segment(parts: tuple[str, ...]) -> bool:
    """``(model, file.jsonl, n)``: a segment of a line-per-record file."""
    return len(parts) == 3 and parts[1].endswith(LINES_SUFFIX) and len(parts[2]) == 6 and parts[2].isdigit()


def segments(data: bytes, limit: int = SEGMENT_BYTES) -> list[bytes]:
    """Whole lines, cut from the start so that each segment stays within ``limit``: the same
    file gives the same segments, and an append changes only the last one (or adds one).

    >>> segments(b"aa\\nbb\\ncc\\n", limit=6)
    [b'aa\\nbb\\n', b'cc\\n']
    """
    parts: list[bytes] = []
    start = end = 0
    while end < len(data):
        line_end = data.find(b"\n", end) + 1 or len(data)
        if line_end - start > limit and end > start:
            parts.append(data[start:end])
            start = end
        end = line_end
    if end > start:
        parts.append(data[start:end])
    return parts


def publish_order(keys: Iterable[str]) -> list[str]:
    """Version manifests first, then the model's documents; each group by name."""
    return sorted(keys, key=lambda key: (not is_manifest(key), key))


def split_key(key: str) -> tuple[str, ...] | None:
    """The key's path segments when it is a document's key (``model/file`` or
    ``model/version/manifest.json``, plain names only); None for anything else."""
    parts = tuple(key.split("/"))
    if not all(is_plain_name(part) for part in parts):
        return None
    if len(parts) == 2 or (len(parts) == 3 and (parts[2] == MANIFEST_DOCUMENT or is_segment(parts))):
        return parts
    return None


class RepositoryScan:
    """Reads a repository's documents; a file is read again only when its size, modification
    time or inode changed, so scanning every fraction of a second costs a ``stat`` per file."""

    def __init__(self, root: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        self._files: dict[Path, tuple[Stamp, bytes]] = {}
        self._digests: dict[Path, tuple[Stamp, str]] = {}

    def documents(self) -> Documents:
        documents: Documents = {}
        if not self.root.is_dir():
            return documents
        for model_dir in sorted(self.root.iterdir()):
            if not (model_dir.is_dir() and is_plain_name(model_dir.name)):
                continue
            for entry in sorted(model_dir.iterdir()):
                if not is_plain_name(entry.name):
                    continue  # the lock file, temporary files of atomic writes
                key = f"{model_dir.name}/{entry.name}"
                try:
                    if entry.is_file() and entry.suffix == LINES_SUFFIX:
                        for number, segment in enumerate(segments(self._content(entry), self.segment_bytes)):
                            documents[f"{key}/{number:06d}"] = segment
                    elif entry.is_file():
                        documents[key] = self._content(entry)
                    elif (entry / METADATA_FILE).is_file():
                        documents[f"{key}/{MANIFEST_DOCUMENT}"] = self._manifest(entry)
                except FileNotFoundError:
                    continue  # removed while we looked: the next scan publishes its tombstone
        return documents

    def _content(self, path: Path) -> bytes:
        stamp = _stamp(path)
        known = self._files.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        data = path.read_bytes()
        if path.suffix == LINES_SUFFIX:
            data = data[: data.rfind(b"\n") + 1]
        self._files[path] = (stamp, data)
        return data

    def _manifest(self, directory: Path) -> bytes:
        files = {path.name: self._digest(path) for path in version_files(directory)}
        metadata = self._content(directory / METADATA_FILE).decode()
        return msgspec.json.encode(VersionManifest(metadata=metadata, files=files))

    def _digest(self, path: Path) -> str:
        stamp = _stamp(path)
        known = self._digests.get(path)
        if known is None or known[0] != stamp:
            known = self._digests[path] = (stamp, file_digest(path))
        return known[1]


def _stamp(path: Path) -> Stamp:
    status = path.stat()
    return (status.st_mtime_ns, status.st_size, status.st_ino)
