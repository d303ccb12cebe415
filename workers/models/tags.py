"""Version tags: free-form ``key=value`` labels on a model's versions (``env=staging``,
``experiment=exp-12``), and selecting a version by one (``tag:env=candidate``).

Tags live in one document beside the aliases, written the same way (atomically, under the
registry's lock; ``workers.models.registry``)::

    <root>/<name>/tags.json   {"1.2.0": {"env": "candidate", "experiment": "exp-12"}}

Unlike an alias, one tag may sit on several versions (``env=staging`` on two of them); a
selector must find exactly one, so an experiment arm never lands on a version by chance.
Keys and values are short words: letters, digits and ``. _ - /`` (a key starts with a letter),
so a tag reads the same on the command line, in a selector and in the audit log.

>>> changes = parse_changes(["env=staging", "owner="], removals=["team"])
>>> changes.set, changes.remove
({'env': 'staging'}, ('owner', 'team'))
>>> apply_changes({"owner": "ana", "env": "dev"}, changes)
{'env': 'staging'}
>>> parse_selector("tag:env=candidate")
('env', 'candidate')
>>> parse_selector("1.2.0") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from streaminfer.workers.errors import RegistryError

TAGS_FILE = "tags.json"
SELECTOR_PREFIX = "tag:"
MAX_KEY_LENGTH = 63
MAX_VALUE_LENGTH = 128

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
_VALUE = re.compile(r"[A-Za-z0-9._/-]+")

Tags = dict[str, str]


@dataclass(frozen=True)
class TagChanges:
    """What one ``tag`` command does: keys to set (with their values) and keys to remove."""

    set: Tags
    remove: tuple[str, ...]

    def describe(self, before: Tags) -> str:
        """``env: dev -> staging; owner: ana -> -``, for the audit log (only what changes)."""
        parts = [f"{k}: {before.get(k, '-')} -> {v}" for k, v in self.set.items() if before.get(k) != v]
        parts += [f"{k}: {before[k]} -> -" for k in self.remove if k in before]
        return "; ".join(parts)


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or len(key) > MAX_KEY_LENGTH:
        raise RegistryError(
            f"tag key {key!r} is not valid: a letter, then letters, digits or . _ - / "
            f"(at most {MAX_KEY_LENGTH} characters), like env or experiment"
        )
    return key


def check_value(key: str, value: str) -> str:
    if not _VALUE.fullmatch(value) or len(value) > MAX_VALUE_LENGTH:
        raise RegistryError(
            f"tag {key}={value!r}: a value is letters, digits or . _ - / (at most {MAX_VALUE_LENGTH} "
            f"characters), like staging or exp-12; to remove the tag write {key}= or --remove {key}"
        )
    return value


def parse_changes(assignments: Sequence[str], removals: Sequence[str] = ()) -> TagChanges:
    """``KEY=VALUE`` sets a tag, ``KEY=`` (or ``KEY`` in ``removals``) removes it; a key given
    twice, or both set and removed, is refused, as is a command that changes nothing."""
    values: Tags = {}
    removed: list[str] = []
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep:
            raise RegistryError(f"tag {text!r}: write KEY=VALUE (like env=staging), or KEY= to remove it")
        check_key(key)
        if key in values or key in removed:
            raise RegistryError(f"tag key {key!r} is given twice")
        if value:
            values[key] = check_value(key, value)
        else:
            removed.append(key)
    for key in removals:
        check_key(key)
        if key in values or key in removed:
            raise RegistryError(f"tag key {key!r} is given twice")
        removed.append(key)
    if not values and not removed:
        raise RegistryError("no tag to change: give KEY=VALUE (like env=staging), KEY= or --remove KEY")
    return TagChanges(values, tuple(removed))


def apply_changes(tags: Tags, changes: TagChanges) -> Tags:
    out = {k: v for k, v in tags.items() if k not in changes.remove}
    out.update(changes.set)
    return dict(sorted(out.items()))


def describe(tags: Tags) -> str:
    """``env=staging, experiment=exp-12``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def is_selector(text: str) -> bool:
    return text.startswith(SELECTOR_PREFIX)


def parse_selector(text: str) -> tuple[str, str] | None:
    """``tag:KEY=VALUE`` as (key, value); ``None`` for a version or an alias."""
    if not is_selector(text):
        return None
    key, sep, value = text[len(SELECTOR_PREFIX):].partition("=")
    if not sep or not value:
        raise RegistryError(f"{text!r}: a tag selector is tag:KEY=VALUE, like tag:env=candidate")
    return check_key(key), check_value(key, value)


def select(model: str, tags_by_version: dict[str, Tags], key: str, value: str) -> str:
    """The one version of ``model`` tagged ``key=value``; none or several is an error naming the tag."""
    found = [version for version, tags in tags_by_version.items() if tags.get(key) == value]
    if not found:
        raise RegistryError(
            f"no version of {model} is tagged {key}={value}: tag one with "
            f"`streaminfer models tag {model} VERSION {key}={value}`"
        )
    if len(found) > 1:
        raise RegistryError(
            f"tag {key}={value} is on {len(found)} versions of {model} ({', '.join(found)}): "
            "an arm needs exactly one; remove it from the others or name the version"
        )
    return found[0]
