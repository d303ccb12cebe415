"""From alerts to notifications: routing, grouping, deduplication, repeats and silences.

Alertmanager's model, so its users know what to expect:

- an alert is routed down a tree of routes (first matching child wins, settings inherit) to a
  receiver, and grouped there by the route's ``group_by`` labels;
- a new group waits ``group_wait_s`` before its first notification, so alerts that fire
  together arrive together; later changes (an alert added or resolved) go out at most every
  ``group_interval_s``; an unchanged firing group is notified again after ``repeat_interval_s``,
  never sooner, so the same alert does not notify twice within it;
- a resolved alert that was notified as firing is notified once as resolved, then forgotten;
- alerts matched by an active silence are left out (and a group left with nothing is not sent).

Each body says why it was sent (``notification_reason``, Alertmanager 0.32's field and values:
``first notification``, ``new alerts added``, ``some alerts resolved``, ``all alerts resolved``,
``repeat interval elapsed``) and carries the labels of the route that matched (``routeLabels``,
Alertmanager 0.34's; our routes declare none, so it is always the empty object).

Each notification gets an id from its group and a per-group sequence number: the state that
numbers them is checkpointed, so a notification re-sent after a crash has the id it had, and
receivers can drop the repeat.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from streaminfer.monitoring.alerting.config import RouteConfig, parse_matcher
from streaminfer.monitoring.alerting.rules import Alert
from streaminfer.monitoring.alerting.signals import matches
from streaminfer.schemas.notifications import (
    FIRING,
    RESOLVED,
    ZERO_TIME,
    Notification,
    Silence,
    WebhookAlert,
    WebhookPayload,
)

FIRST_NOTIFICATION = "first notification"
NEW_ALERTS_ADDED = "new alerts added"
SOME_ALERTS_RESOLVED = "some alerts resolved"
ALL_ALERTS_RESOLVED = "all alerts resolved"
REPEAT_INTERVAL_ELAPSED = "repeat interval elapsed"

DEFAULT_GROUP_BY = ["alertname"]
DEFAULT_GROUP_WAIT_S = 10.0
DEFAULT_GROUP_INTERVAL_S = 60.0
DEFAULT_REPEAT_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Routing:
    receiver: str
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float


def route(tree: RouteConfig, labels: dict[str, str], inherited: Routing | None = None) -> Routing:
    here = Routing(
        receiver=tree.receiver or (inherited.receiver if inherited else ""),
        group_by=tuple(tree.group_by) if tree.group_by is not None else (inherited.group_by if inherited else tuple(DEFAULT_GROUP_BY)),
        group_wait_s=_pick(tree.group_wait_s, inherited, "group_wait_s", DEFAULT_GROUP_WAIT_S),
        group_interval_s=_pick(tree.group_interval_s, inherited, "group_interval_s", DEFAULT_GROUP_INTERVAL_S),
        repeat_interval_s=_pick(tree.repeat_interval_s, inherited, "repeat_interval_s", DEFAULT_REPEAT_INTERVAL_S),
    )
    for child in tree.routes:
        if matches([parse_matcher(m) for m in child.matchers], labels):
            return route(child, labels, here)
    return here


def _pick(value: float | None, inherited: Routing | None, name: str, default: float) -> float:
    if value is not None:
        return value
    return getattr(inherited, name) if inherited else default


def rfc3339(ms: int | None) -> str:
    if ms is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Group:
    key: str
    routing: Routing
    labels: dict[str, str]
    first_ms: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    """Fingerprint → status as last notified."""

    last_sent_ms: int | None = None
    sequence: int = 0


def silenced(alert: Alert, silences: list[Silence], now_ms: int) -> bool:
    return any(s.starts_ms <= now_ms < s.ends_ms and matches(s.matchers, alert.labels) for s in silences)


@dataclass
class Dispatcher:
    tree: RouteConfig
    external_url: str = ""
    groups: dict[str, Group] = field(default_factory=dict)

    def apply(self, firing: list[Alert], resolved: list[Alert], silences: list[Silence], now_ms: int) -> list[Notification]:
        for alert in firing:
            self._group_of(alert, now_ms).alerts[alert.fingerprint] = alert
        for alert in resolved:
            group = self.groups.get(self._key(alert)[0])
            if group is not None and (alert.fingerprint in group.alerts or alert.fingerprint in group.sent):
                group.alerts[alert.fingerprint] = alert
        notifications = []
        for key in list(self.groups):
            group = self.groups[key]
            notification = self._flush(group, silences, now_ms)
            if notification is not None:
                notifications.append(notification)
            if not group.alerts:
                del self.groups[key]
        return notifications

    def _key(self, alert: Alert) -> tuple[str, Routing, dict[str, str]]:
        routing = route(self.tree, alert.labels)
        labels = {name: alert.labels.get(name, "") for name in routing.group_by}
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{routing.receiver}:{{{inner}}}", routing, labels

    def _group_of(self, alert: Alert, now_ms: int) -> Group:
        key, routing, labels = self._key(alert)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, routing, labels, now_ms)
        return group

    def _flush(self, group: Group, silences: list[Silence], now_ms: int) -> Notification | None:
        visible = {fp: a for fp, a in group.alerts.items() if not silenced(a, silences, now_ms)}
        # a resolved alert is news only to whoever was told it was firing
        news = {
            fp: FIRING if alert.firing else RESOLVED
            for fp, alert in visible.items()
            if alert.firing or group.sent.get(fp) == FIRING
        }
        for fp, alert in list(group.alerts.items()):
            if not alert.firing and fp not in news:
                del group.alerts[fp]  # resolved unseen: silenced, or within group_wait
        reason = self._due(group, news, now_ms)
        if reason is None:
            return None
        group.sequence += 1
        group.last_sent_ms = now_ms
        group.sent = {fp: status for fp, status in news.items() if status == FIRING}
        notification = self._notification(group, [visible[fp] for fp in news], now_ms, reason)
        for fp, status in news.items():
            if status == RESOLVED:
                del group.alerts[fp]
        return notification

    @staticmethod
    def _due(group: Group, news: dict[str, str], now_ms: int) -> str | None:
        """Why the group is notified now (an Alertmanager ``notification_reason``), or None."""
        routing = group.routing
        any_firing = FIRING in news.values()
        if group.last_sent_ms is None:
            due = any_firing and now_ms - group.first_ms >= routing.group_wait_s * 1000
            return FIRST_NOTIFICATION if due else None
        changed = [fp for fp, status in news.items() if group.sent.get(fp) != status]
        if changed:
            if now_ms - group.last_sent_ms < routing.group_interval_s * 1000:
                return None
            if any(news[fp] == FIRING for fp in changed):
                return NEW_ALERTS_ADDED
            return SOME_ALERTS_RESOLVED if any_firing else ALL_ALERTS_RESOLVED
        due = any_firing and now_ms - group.last_sent_ms >= routing.repeat_interval_s * 1000
        return REPEAT_INTERVAL_ELAPSED if due else None

    def _notification(self, group: Group, alerts: list[Alert], now_ms: int, reason: str) -> Notification:
        status = FIRING if any(a.firing for a in alerts) else RESOLVED
        webhook_alerts = [
            WebhookAlert(
                status=FIRING if a.firing else RESOLVED, labels=dict(a.labels), annotations=dict(a.annotations),
                startsAt=rfc3339(a.starts_ms), endsAt=rfc3339(a.ends_ms), generatorURL=self.external_url,
                fingerprint=a.fingerprint,
            )
            for a in sorted(alerts, key=lambda a: a.fingerprint)
        ]
        common = _common([a.labels for a in alerts])
        payload = WebhookPayload(
            version="4", groupKey=group.key, truncatedAlerts=0, status=status, receiver=group.routing.receiver,
            groupLabels=dict(group.labels), commonLabels=common,
            commonAnnotations=_common([a.annotations for a in alerts]), externalURL=self.external_url,
            alerts=webhook_alerts, notification_reason=reason, routeLabels={},
        )
        notification_id = hashlib.sha256(f"{group.key}#{group.first_ms}#{group.sequence}".encode()).hexdigest()[:32]
        return Notification(id=notification_id, receiver=group.routing.receiver, created_ms=now_ms, payload=payload)


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def now_ms() -> int:
    return int(time.time() * 1000)
