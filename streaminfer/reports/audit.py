"""`streaminfer audit report`: what the system did over a window, from what it already records.

Sources, each read as its writer left it:

- the registry's audit log of each model (``<repository>/<name>/audit.jsonl``): promotions,
  rollbacks, alias, tag and traffic changes, canary decisions, with who and why; the production
  alias's changes give the versions served and for how long;
- the experiment controller's looks (``<experiments.snapshots_dir>/<experiment>.jsonl``): each
  experiment and its verdict;
- the alerting outbox topic (``alerting.topics.outbox``): alerts fired and resolved;
- each served version's metadata: the privacy policy in force;
- the dead-letter topic: dead letters by reason (the ``__streaminfer.errors.reason`` header).

Topics are read from their beginning to where they end now (``reports.audit_sources``); a record
counts when its time falls in ``[since, until)``. The report is JSON (``audit.json``, the figures)
and HTML (``audit.html``, the same as tables), both in one directory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from streaminfer.monitoring.experiments.evidence import Snapshot
from streaminfer.schemas.errors import StreamInferError
from streaminfer.schemas.notifications import FIRING, RESOLVED, Notification
from streaminfer.streams.deadletters import DeadLetter
from streaminfer.workers.models.registry import PRODUCTION, AuditEntry, ModelRegistry

JSON_FILE, HTML_FILE = "audit.json", "audit.html"


class Window(msgspec.Struct, frozen=True):
    since_ms: int | None
    """Inclusive; ``None``: from the oldest record."""

    until_ms: int
    """Exclusive."""

    def holds(self, at_ms: int) -> bool:
        return (self.since_ms is None or at_ms >= self.since_ms) and at_ms < self.until_ms


class Served(msgspec.Struct):
    """One stretch of time a version was its model's production."""

    model: str
    version: str
    start: str
    end: str
    seconds: float


class Change(msgspec.Struct):
    at: str
    model: str
    action: str
    who: str
    why: str
    alias: str
    from_version: str | None
    to_version: str | None
    detail: str


class Decision(msgspec.Struct):
    at: str
    action: str
    gate: str
    detail: str


class Experiment(msgspec.Struct):
    name: str
    model: str
    kind: str
    looks: int
    first: str
    last: str
    arms: dict[str, str]
    """Arm to version, at the last look."""

    outcome: str
    """The last decision (``advance``, ``complete``, ``rollback``) of a canary; for a split, the
    arms whose effect is significant, or ``no significant difference``."""

    verdict: str
    decisions: list[Decision]


class Alert(msgspec.Struct):
    name: str
    labels: dict[str, str]
    status: str
    """``resolved`` once a resolved notification was seen in the window, else ``firing``."""

    starts_at: str
    ends_at: str
    receivers: list[str]


class Privacy(msgspec.Struct):
    model: str
    version: str
    features: dict[str, str]
    parameters: dict[str, str]


class DeadLetters(msgspec.Struct):
    total: int
    by_reason: dict[str, int]
    by_model: dict[str, dict[str, int]]
    """Model, then reason."""


class Counts(msgspec.Struct):
    promotions: int
    rollbacks: int
    alias_changes: int
    tag_changes: int
    traffic_changes: int
    canary_decisions: int
    experiments: int
    alerts_fired: int
    alerts_resolved: int
    dead_letters: int


class AuditReport(msgspec.Struct):
    since: str | None
    until: str
    generated_at: str
    counts: Counts
    served: list[Served]
    served_seconds: dict[str, dict[str, float]]
    """Model, then version: seconds as production within the window."""

    changes: list[Change]
    experiments: list[Experiment]
    alerts: list[Alert]
    privacy: list[Privacy]
    dead_letters: DeadLetters
    sources: dict[str, str]
    """Where each part was read from, or why it was not."""


def build_report(registry: ModelRegistry, snapshots_dir: Path, window: Window,
                 notifications: list[tuple[int, Notification]], dead_letters: list[DeadLetter],
                 sources: dict[str, str]) -> AuditReport:
    """``notifications``: (record time in ms, notification) from the outbox. Without ``since``
    the window starts at the oldest record of any source."""
    models = registry.repository.model_names()
    history = {name: registry.history(name) for name in models}
    if window.since_ms is None:
        oldest = [e.at_ms for entries in history.values() for e in entries[:1]]
        oldest += [at for at, _ in notifications] + [d.timestamp_ms for d in dead_letters]
        window = Window(min(oldest, default=window.until_ms), window.until_ms)
    changes = [_change(name, e) for name in models for e in history[name] if window.holds(e.at_ms)]
    changes.sort(key=lambda c: c.at)
    served = [s for name in models for s in _served(registry, name, history[name], window)]
    experiments = _experiments(snapshots_dir, window)
    alerts, fired = _alerts(notifications, window)
    letters = _dead_letters(dead_letters, window)
    actions = Counter(c.action for c in changes)
    counts = Counts(
        promotions=sum(1 for c in changes if c.action == "promote" and c.alias == PRODUCTION),
        rollbacks=actions["rollback"], alias_changes=actions["alias"], tag_changes=actions["tag"],
        traffic_changes=actions["traffic"],
        canary_decisions=actions["canary-step"] + actions["canary-rollback"] + actions["canary-complete"],
        experiments=len(experiments), alerts_fired=fired,
        alerts_resolved=sum(1 for a in alerts if a.status == RESOLVED), dead_letters=letters.total,
    )
    totals: dict[str, dict[str, float]] = {}
    for s in served:
        by_version = totals.setdefault(s.model, {})
        by_version[s.version] = round(by_version.get(s.version, 0.0) + s.seconds, 3)
    in_force = sorted({(s.model, s.version) for s in served}
                      | {(e.model, v) for e in experiments for v in e.arms.values() if v and e.model in models})
    return AuditReport(
        since=_iso(window.since_ms) if window.since_ms is not None else None, until=_iso(window.until_ms),
        generated_at=_iso(_now_ms()), counts=counts, served=served, served_seconds=totals, changes=changes,
        experiments=experiments, alerts=alerts, privacy=[p for m, v in in_force if (p := _privacy(registry, m, v))],
        dead_letters=letters, sources=sources,
    )


def write_report(report: AuditReport, out: Path) -> tuple[Path, Path]:
    from streaminfer.reports.audit_html import render

    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / JSON_FILE, out / HTML_FILE
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    html_path.write_text(render(report), encoding="utf-8")
    return json_path, html_path


def parse_moment(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 date or time (UTC unless it says), or of epoch ms;
    ``ValueError`` otherwise."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


# the parts ---------------------------------------------------------------------------------


def _change(model: str, entry: AuditEntry) -> Change:
    return Change(at=_iso(entry.at_ms), model=model, action=entry.action, who=entry.who, why=entry.why,
                  alias=entry.alias, from_version=entry.from_version, to_version=entry.to_version, detail=entry.detail)


def _served(registry: ModelRegistry, name: str, history: list[AuditEntry], window: Window) -> list[Served]:
    """Production's stretches over the window: the version it had at the start (the last change
    before it, else the first change's ``from``, else what it is now), then each change."""
    moves = [e for e in history if e.alias == PRODUCTION and e.to_version is not None]
    start, end = window.since_ms or 0, min(window.until_ms, _now_ms())
    if start >= end:
        return []
    before = [e for e in moves if e.at_ms < start]
    version = (before[-1].to_version if before else moves[0].from_version if moves else None) or registry.production(name)
    stretches = []
    cursor = start
    for move in (e for e in moves if start <= e.at_ms < end):
        if move.at_ms > cursor:  # a change at the window's first instant leaves nothing before it
            stretches.append(Served(name, version, _iso(cursor), _iso(move.at_ms), (move.at_ms - cursor) / 1000))
        version, cursor = move.to_version or version, move.at_ms
    stretches.append(Served(name, version, _iso(cursor), _iso(end), (end - cursor) / 1000))
    return stretches


def _experiments(snapshots_dir: Path, window: Window) -> list[Experiment]:
    from streaminfer.reports.experiment import verdict

    decoder = msgspec.json.Decoder(Snapshot)
    found = []
    for path in sorted(snapshots_dir.glob("*.jsonl")) if snapshots_dir.is_dir() else []:
        looks = [s for line in path.read_bytes().splitlines() if line.strip()
                 if window.holds((s := decoder.decode(line)).at_ms)]
        if not looks:
            continue
        last = looks[-1]
        decisions = [Decision(_iso(s.at_ms), s.verdict.action, s.verdict.gate, s.verdict.detail)
                     for s in looks if s.verdict is not None and s.verdict.action != "wait"]
        if last.kind == "canary":
            outcome = decisions[-1].action if decisions else "no decision yet"
        else:
            significant = sorted({f"{e.arm} {e.outcome}" for e in last.effects if e.significant})
            outcome = "significant: " + ", ".join(significant) if significant else "no significant difference"
        found.append(Experiment(
            name=last.experiment, model=last.model, kind=last.kind, looks=len(looks), first=_iso(looks[0].at_ms),
            last=_iso(last.at_ms), arms={a.arm: a.version for a in last.arms}, outcome=outcome,
            verdict=verdict(looks), decisions=decisions,
        ))
    return found


def _alerts(notifications: Iterable[tuple[int, Notification]], window: Window) -> tuple[list[Alert], int]:
    """One entry per alert (fingerprint and start), however many receivers and repeats it had;
    and how many of them fired in the window (a firing notification seen in it)."""
    alerts: dict[tuple[str, str], Alert] = {}
    fired: set[tuple[str, str]] = set()
    for at_ms, notification in notifications:
        if not window.holds(at_ms):
            continue
        for item in notification.payload.alerts:
            alert = alerts.setdefault((item.fingerprint, item.startsAt), Alert(
                name=item.labels.get("alertname", item.fingerprint), labels=dict(item.labels), status=FIRING,
                starts_at=item.startsAt, ends_at="", receivers=[],
            ))
            if item.status == RESOLVED:
                alert.status, alert.ends_at = RESOLVED, item.endsAt
            else:
                fired.add((item.fingerprint, item.startsAt))
            if notification.receiver not in alert.receivers:
                alert.receivers.append(notification.receiver)
    return sorted(alerts.values(), key=lambda a: (a.starts_at, a.name)), len(fired)


def _dead_letters(letters: Iterable[DeadLetter], window: Window) -> DeadLetters:
    by_reason: Counter[str] = Counter()
    by_model: dict[str, Counter[str]] = {}
    for letter in letters:
        if window.holds(letter.timestamp_ms):
            reason = letter.reason or "unknown"
            by_reason[reason] += 1
            by_model.setdefault(letter.model or "-", Counter())[reason] += 1
    return DeadLetters(total=sum(by_reason.values()), by_reason=dict(sorted(by_reason.items())),
                       by_model={m: dict(sorted(c.items())) for m, c in sorted(by_model.items())})


def _privacy(registry: ModelRegistry, model: str, version: str) -> Privacy | None:
    try:
        policy = registry.repository.resolve(model, version).metadata.privacy
    except StreamInferError:
        return None  # a version gone from the repository since: nothing to read its policy from
    if policy is None:
        return Privacy(model, version, {}, {})
    return Privacy(model, version, dict(policy.features), dict(policy.parameters))


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _now_ms() -> int:
    return int(time.time() * 1000)
