"""Grouping, deduplication, repeats, resolves, silences and routing, on a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec

from streaminfer.monitoring.alerting.config import RouteConfig
from streaminfer.monitoring.alerting.dispatch import Dispatcher
from streaminfer.monitoring.alerting.rules import Alert
from streaminfer.schemas.notifications import Matcher, Silence

ROUTE = RouteConfig(
    receiver="team", group_by=["alertname", "model"], group_wait_s=10, group_interval_s=30, repeat_interval_s=300,
    routes=[RouteConfig(matchers=["severity=critical"], receiver="pager", group_wait_s=0)],
)


def alert(name: str, feature: str, starts_s: float = 0, ends_s: float | None = None, severity: str = "warning") -> Alert:
    labels = {"alertname": name, "model": "m", "feature": feature, "severity": severity}
    return Alert(name, labels, {"summary": f"{feature} drifted"}, 1.0, int(starts_s * 1000),
                 None if ends_s is None else int(ends_s * 1000))


def test_alerts_firing_together_arrive_in_one_notification_after_group_wait():
    dispatcher = Dispatcher(ROUTE, "http://x")
    assert dispatcher.apply([alert("Drift", "a")], [], [], 0) == []
    assert dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [], 5_000) == []
    (sent,) = dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [], 10_000)
    body = sent.payload
    assert (body.version, body.status, body.receiver) == ("4", "firing", "team")
    assert body.groupLabels == {"alertname": "Drift", "model": "m"}
    assert sorted(a.labels["feature"] for a in body.alerts) == ["a", "b"]
    assert body.commonLabels == {"alertname": "Drift", "model": "m", "severity": "warning"}
    assert all(a.endsAt == "0001-01-01T00:00:00Z" for a in body.alerts)


def test_an_unchanged_firing_group_is_not_notified_again_before_the_repeat_interval():
    dispatcher = Dispatcher(ROUTE)
    sent = [n for t in range(0, 301, 5) for n in dispatcher.apply([alert("Drift", "a")], [], [], t * 1000)]
    assert len(sent) == 1
    (repeat,) = dispatcher.apply([alert("Drift", "a")], [], [], 310_000)
    assert repeat.id != sent[0].id and repeat.payload.status == "firing"


def test_a_resolved_alert_is_notified_once_as_resolved():
    dispatcher = Dispatcher(ROUTE)
    dispatcher.apply([alert("Drift", "a")], [], [], 0)
    (_firing,) = dispatcher.apply([alert("Drift", "a")], [], [], 10_000)
    (resolved,) = dispatcher.apply([], [alert("Drift", "a", ends_s=50)], [], 50_000)
    assert resolved.payload.status == "resolved"
    assert resolved.payload.alerts[0].endsAt.startswith("1970-01-01T00:00:50")
    assert dispatcher.apply([], [], [], 400_000) == [] and dispatcher.groups == {}


def test_an_alert_resolved_within_group_wait_notifies_nobody():
    dispatcher = Dispatcher(ROUTE)
    dispatcher.apply([alert("Drift", "a")], [], [], 0)
    assert dispatcher.apply([], [alert("Drift", "a", ends_s=5)], [], 5_000) == []
    assert dispatcher.apply([], [], [], 20_000) == [] and dispatcher.groups == {}


def test_a_new_alert_in_a_notified_group_goes_out_after_the_group_interval():
    dispatcher = Dispatcher(ROUTE)
    dispatcher.apply([alert("Drift", "a")], [], [], 0)
    dispatcher.apply([alert("Drift", "a")], [], [], 10_000)
    assert dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [], 20_000) == []
    (update,) = dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [], 40_000)
    assert sorted(a.labels["feature"] for a in update.payload.alerts) == ["a", "b"]


def test_silenced_alerts_are_left_out_until_the_silence_expires():
    dispatcher = Dispatcher(ROUTE)
    silence = Silence("s1", [Matcher("feature", "a|c", is_regex=True)], starts_ms=0, ends_ms=100_000)
    dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [silence], 0)
    (sent,) = dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [silence], 10_000)
    assert [a.labels["feature"] for a in sent.payload.alerts] == ["b"]
    assert dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [silence], 50_000) == []
    (after,) = dispatcher.apply([alert("Drift", "a"), alert("Drift", "b")], [], [silence], 100_000)
    assert sorted(a.labels["feature"] for a in after.payload.alerts) == ["a", "b"]


def test_critical_alerts_route_to_their_own_receiver_without_waiting():
    dispatcher = Dispatcher(ROUTE)
    (paged,) = dispatcher.apply([alert("Down", "x", severity="critical")], [], [], 0)
    assert paged.receiver == "pager" and paged.payload.groupKey == 'pager:{alertname="Down",model="m"}'


def test_notification_ids_are_unique_per_notification_and_stable_for_the_same_state():
    first, second = Dispatcher(ROUTE), Dispatcher(ROUTE)
    ids = []
    for dispatcher in (first, second):
        sent = []
        for t, alerts in ((0, ["a"]), (10, ["a"]), (40, ["a", "b"]), (400, ["a", "b"])):
            sent += dispatcher.apply([alert("Drift", f) for f in alerts], [], [], t * 1000)
        ids.append([n.id for n in sent])
    assert ids[0] == ids[1] and len(set(ids[0])) == len(ids[0]) == 3


def test_each_notification_says_why_it_was_sent_as_alertmanager_does():
    dispatcher = Dispatcher(ROUTE)
    reasons = []
    for t_s, firing, resolved in [
        (0, [alert("Drift", "a")], []),
        (10, [alert("Drift", "a")], []),  # after group_wait
        (50, [alert("Drift", "a"), alert("Drift", "b")], []),  # after group_interval
        (90, [alert("Drift", "a")], [alert("Drift", "b", ends_s=90)]),
        (400, [alert("Drift", "a")], []),  # after repeat_interval
        (440, [], [alert("Drift", "a", ends_s=440)]),
    ]:
        reasons += [n.payload.notification_reason for n in dispatcher.apply(firing, resolved, [], t_s * 1000)]
    assert reasons == ["first notification", "new alerts added", "some alerts resolved",
                       "repeat interval elapsed", "all alerts resolved"]


def test_webhook_bodies_carry_route_labels_and_satisfy_alertmanager_s_schema():
    dispatcher = Dispatcher(ROUTE)
    dispatcher.apply([alert("Drift", "a")], [], [], 0)
    (sent,) = dispatcher.apply([alert("Drift", "a")], [], [], 10_000)
    body = json.loads(msgspec.json.encode(sent.payload))
    assert body["routeLabels"] == {} and body["notification_reason"] == "first notification"
    jsonschema.validate(body, json.loads((Path(__file__).parents[1] / "support" / "alertmanager_webhook.schema.json").read_text()))
