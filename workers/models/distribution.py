"""Model files for actors on nodes that do not share the driver's disk.

A version's files are described by a ``VersionManifest`` (its metadata, and the sha256 of every
other file), which the driver publishes on the control topic (``streams.control``). A node that
needs the version asks an ``ArtifactSource`` for each file, checks it against the manifest, and
keeps it in a node-local cache named by its digest (``ArtifactCache``), so several actors on one
node fetch a file once and a file that changed is never taken for the old one. Two sources:

- ``ObjectStoreSource``: the driver's registry actor (``streaminfer.actors.registry``) reads
  the file on the driver's node and returns its bytes; Ray carries them through its object store;
- ``StoreSource``: a model store URI read with fsspec (``file://``, ``s3://``, ``gs://`` where
  the matching fsspec backend is installed), laid out like the repository
  (``<uri>/<name>/<version>/<file>``).

>>> import hashlib
>>> digest_of(b"onnx") == hashlib.sha256(b"onnx").hexdigest()
True
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import msgspec

from streaminfer.workers.errors import ArtifactInvalid
from streaminfer.workers.models.repository import METADATA_FILE

MANIFEST_DOCUMENT = "manifest.json"
"""The name of a version's document on the control topic (``<name>/<version>/manifest.json``)."""


class VersionManifest(msgspec.Struct, frozen=True):
    metadata: str
    """``metadata.json`` as it is on the driver's disk (JSON text)."""

    files: dict[str, str]
    """Every other file of the version, by name: its sha256 (hex)."""


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_plain_name(name: str) -> bool:
    """A single path segment that is not hidden: what a model, version or file name may be."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and name not in ("..", ".")


def version_files(directory: Path) -> list[Path]:
    """The files a version ships besides its metadata (hidden and temporary files left out)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and is_plain_name(p.name) and p.name != METADATA_FILE)


class ArtifactSource(Protocol):
    """Where a node gets a version's file from."""

    async def fetch(self, name: str, version: str, file: str) -> bytes: ...


class ObjectStoreSource:
    """The registry actor on the driver's node; its answer travels through Ray's object store."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def fetch(self, name: str, version: str, file: str) -> bytes:
        data: bytes = await self._handle.artifact.remote(name, version, file)
        return data


class StoreSource:
    """A model store read with fsspec: ``<uri>/<name>/<version>/<file>``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    async def fetch(self, name: str, version: str, file: str) -> bytes:
        return await asyncio.to_thread(self._read, f"{self.uri}/{name}/{version}/{file}")

    @staticmethod
    def _read(url: str) -> bytes:
        import fsspec

        try:
            with fsspec.open(url, "rb") as handle:
                return bytes(handle.read())
        except (OSError, ValueError, ImportError) as exc:
            raise ArtifactInvalid(url, f"cannot be read from the model store: {exc}") from exc


class ArtifactCache:
    """A node-local directory of files named by their sha256, and copies of them where a
    repository mirror needs them."""

    def __init__(self, directory: Path, source: ArtifactSource) -> None:
        self.directory = Path(directory)
        self.source = source

    async def materialize(self, name: str, version: str, manifest: VersionManifest, into: Path) -> None:
        """Write the version's files, checked, into ``into``; ``metadata.json`` last, so the
        version is listed (``ModelRepository.versions``) only once it is whole."""
        cached = {}
        for file, digest in sorted(manifest.files.items()):
            if not is_plain_name(file):
                raise ArtifactInvalid(f"{name}/{version}/{file}", "is not a plain file name")
            cached[file] = await self._cached(name, version, file, digest)
        await asyncio.to_thread(_install, cached, manifest, into)

    async def _cached(self, name: str, version: str, file: str, digest: str) -> Path:
        path = self.directory / digest
        if await asyncio.to_thread(_holds, path, digest):
            return path
        data = await self.source.fetch(name, version, file)
        if (found := digest_of(data)) != digest:
            raise ArtifactInvalid(f"{name}/{version}/{file}", f"has sha256 {found}, the manifest says {digest}")
        await asyncio.to_thread(_write_atomically, path, data)
        return path


def cached_file(data: bytes, directory: Path) -> Path:
    """``data`` as a file of the node-local cache, named by its sha256 (written once per node)."""
    path = directory / digest_of(data)
    if not _holds(path, path.name):
        _write_atomically(path, data)
    return path


def _holds(path: Path, digest: str) -> bool:
    return path.is_file() and file_digest(path) == digest


def _install(cached: dict[str, Path], manifest: VersionManifest, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for file, path in cached.items():
        target = into / file
        if not _holds(target, manifest.files[file]):
            _link_or_copy(path, target)
    _write_atomically(into / METADATA_FILE, manifest.metadata.encode())


def _link_or_copy(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # another file system
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
