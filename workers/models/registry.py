"""Aliases over a model's versions, and the audit log of every change to them.

An alias (``production``, ``candidate``, any name) names one version. What a model serves is its
``production`` alias, or its newest release while it has none. Files, next to the versions::

    <root>/<name>/aliases.json   {"production": "1.1.0", "candidate": "1.2.0"}
    <root>/<name>/tags.json      {"1.2.0": {"env": "candidate"}}  (``workers.models.tags``)
    <root>/<name>/audit.jsonl    one line per change: who, when, why, which alias, from, to

Both are plain files on the repository's volume, written atomically under a lock, so the CLI, the
experiment controller and every consumer (which polls them) agree without a server. The audit
log is append-only and is what ``rollback`` reads: rolling back returns ``production`` to the
version it pointed at before the promotion that made it what it is now.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from streaminfer.workers.errors import RegistryError
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.models.tags import TAGS_FILE, TagChanges, Tags, apply_changes, parse_selector, select

PRODUCTION = "production"
ALIASES_FILE = "aliases.json"
AUDIT_FILE = "audit.jsonl"
_LOCK_FILE = ".registry.lock"


class AuditEntry(msgspec.Struct, omit_defaults=True):
    at_ms: int
    who: str
    action: str
    """``promote``, ``rollback``, ``alias``, ``tag``, ``traffic``, ``canary-step``,
    ``canary-rollback`` or ``canary-complete``."""

    alias: str = ""
    from_version: str | None = None
    to_version: str | None = None
    why: str = ""
    detail: str = ""


_audit_decoder = msgspec.json.Decoder(AuditEntry)


def default_actor() -> str:
    """Who made a change, when the caller does not say: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ModelRegistry:
    """Aliases, promotion, rollback and history of the models in one repository."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    # reading ---------------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        path = self._model_dir(name) / ALIASES_FILE
        if not path.is_file():
            return {}
        return msgspec.json.decode(path.read_bytes(), type=dict[str, str])

    def production(self, name: str) -> str:
        """The version ``name`` serves: its ``production`` alias, else its newest release."""
        version = self.aliases(name).get(PRODUCTION)
        return version or self.repository.resolve(name).version

    def resolve_version(self, name: str, version_or_alias: str) -> str:
        """A version named directly or through an alias; ``RegistryError`` naming both kinds if neither."""
        aliases = self.aliases(name)
        if version_or_alias in aliases:
            return aliases[version_or_alias]
        if version_or_alias == PRODUCTION:
            return self.production(name)
        versions = self.repository.versions(name)
        if version_or_alias not in versions:
            raise RegistryError(
                f"{name} has no version or alias {version_or_alias!r} "
                f"(versions: {', '.join(versions) or 'none'}; aliases: {', '.join(sorted(aliases)) or 'none'})"
            )
        return version_or_alias

    def tags(self, name: str) -> dict[str, Tags]:
        """Each tagged version's tags (versions without any are left out)."""
        path = self._model_dir(name) / TAGS_FILE
        if not path.is_file():
            return {}
        return msgspec.json.decode(path.read_bytes(), type=dict[str, Tags])

    def select_tagged(self, name: str, selector: str) -> str:
        """The one version ``tag:KEY=VALUE`` selects; ``RegistryError`` naming the tag if none or several."""
        parsed = parse_selector(selector)
        if parsed is None:
            raise RegistryError(f"{selector!r} is not a tag selector (tag:KEY=VALUE)")
        return select(name, self.tags(name), *parsed)

    def history(self, name: str) -> list[AuditEntry]:
        path = self._model_dir(name) / AUDIT_FILE
        if not path.is_file():
            return []
        return [_audit_decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]

    # changing --------------------------------------------------------------------------------

    def promote(self, name: str, version: str, *, alias: str = PRODUCTION, who: str | None = None,
                why: str = "") -> AuditEntry:
        """Point ``alias`` at ``version`` (which must exist) and record it."""
        if version not in self.repository.versions(name):
            self.repository.resolve(name, version)  # raises UnknownModel listing what is there
        with self._locked(name):
            aliases = self.aliases(name)
            before = aliases.get(alias) or (self._newest(name) if alias == PRODUCTION else None)
            aliases[alias] = version
            self._write_aliases(name, aliases)
            return self._append(name, AuditEntry(
                at_ms=_now_ms(), who=who or default_actor(), action="promote" if alias == PRODUCTION else "alias",
                alias=alias, from_version=before, to_version=version, why=why,
            ))

    def rollback(self, name: str, *, who: str | None = None, why: str = "", action: str = "rollback") -> AuditEntry:
        """Return ``production`` to the version it had before the promotion that set its current one."""
        with self._locked(name):
            current = self.production(name)
            target = self._version_before(name, current)
            if target is None:
                raise RegistryError(
                    f"{name}: production is {current} and the audit log has no earlier version to return to; "
                    f"promote one explicitly with `streaminfer models promote {name} VERSION`"
                )
            aliases = self.aliases(name)
            aliases[PRODUCTION] = target
            self._write_aliases(name, aliases)
            return self._append(name, AuditEntry(
                at_ms=_now_ms(), who=who or default_actor(), action=action, alias=PRODUCTION,
                from_version=current, to_version=target, why=why,
            ))

    def tag(self, name: str, version: str, changes: TagChanges, *, who: str | None = None,
            why: str = "") -> AuditEntry:
        """Set and remove tags of ``version`` (which must exist) and record what changed."""
        if version not in self.repository.versions(name):
            self.repository.resolve(name, version)  # raises UnknownModel listing what is there
        with self._locked(name):
            tags = self.tags(name)
            before = tags.get(version, {})
            after = apply_changes(before, changes)
            if after:
                tags[version] = after
            else:
                tags.pop(version, None)
            self._write_tags(name, tags)
            return self._append(name, AuditEntry(
                at_ms=_now_ms(), who=who or default_actor(), action="tag", to_version=version, why=why,
                detail=changes.describe(before) or "unchanged",
            ))

    def record(self, name: str, entry: AuditEntry) -> AuditEntry:
        """Append a change made elsewhere (a traffic policy, a canary step) to the audit log."""
        with self._locked(name):
            return self._append(name, entry)

    # internals -------------------------------------------------------------------------------

    def _version_before(self, name: str, current: str) -> str | None:
        """The ``from`` of the newest promotion to ``current``; rollbacks are skipped, so rolling
        back twice walks further back instead of toggling between two versions."""
        for entry in reversed(self.history(name)):
            if (
                entry.alias == PRODUCTION and entry.action in ("promote", "canary-complete") and entry.to_version == current
                and entry.from_version is not None and entry.from_version != current
            ):
                return entry.from_version
        return None

    def _newest(self, name: str) -> str | None:
        versions = [v for v in self.repository.versions(name) if "-" not in v] or self.repository.versions(name)
        return versions[-1] if versions else None

    def _model_dir(self, name: str) -> Path:
        return self.repository.root / name

    def _write_aliases(self, name: str, aliases: dict[str, str]) -> None:
        write_atomically(self._model_dir(name) / ALIASES_FILE, msgspec.json.format(msgspec.json.encode(aliases)))

    def _write_tags(self, name: str, tags: dict[str, Tags]) -> None:
        write_atomically(self._model_dir(name) / TAGS_FILE, msgspec.json.format(msgspec.json.encode(dict(sorted(tags.items())))))

    def _append(self, name: str, entry: AuditEntry) -> AuditEntry:
        path = self._model_dir(name) / AUDIT_FILE
        with path.open("ab") as log:
            log.write(msgspec.json.encode(entry) + b"\n")
            log.flush()
            os.fsync(log.fileno())
        return entry

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One writer at a time per model, across processes (the CLI and the controller)."""
        directory = self._model_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / _LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _now_ms() -> int:
    return int(time.time() * 1000)
