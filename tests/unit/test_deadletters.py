"""Dead-letter selection, counting and replay provenance, on records built in memory."""

from __future__ import annotations

from streaminfer.schemas import headers as h
from streaminfer.schemas.deadletter import Reason, error_headers
from streaminfer.streams.deadletters import (
    DeadLetter,
    Selection,
    StatsKey,
    plan_replay,
    replay_headers,
    stats,
)

REQUEST_HEADERS = [(h.REQUEST_ID, b"r-1"), (h.MODEL_NAME, b"fraud"), (h.TRACEPARENT, b"00-abc-def-01")]


def letter(
    reason: Reason = Reason.FEATURE_STORE_UNAVAILABLE,
    *,
    model: str | None = "fraud",
    version: str | None = "1",
    retriable: bool | None = True,
    offset: int = 7,
    timestamp_ms: int = 1_000,
    request_headers: list[tuple[str, bytes]] = REQUEST_HEADERS,
) -> DeadLetter:
    errors = error_headers(reason=reason, message="m", topic="requests", partition=2, offset=40,
                           retriable=retriable, model=model, version=version, request_id="r-1")
    return DeadLetter("deadletter", 1, offset, timestamp_ms, b"key", b"{}", tuple(request_headers + errors))


def test_a_dead_letter_reads_its_reason_model_version_and_retriable_from_its_error_headers():
    d = letter(Reason.UNKNOWN_MODEL, model="m", version=None, retriable=False)
    assert (d.reason, d.model, d.version, d.retriable, d.replays) == ("unknown_model", "m", None, False, 0)


def test_an_empty_selection_selects_every_dead_letter():
    assert Selection().matches(letter()) and Selection().matches(letter(Reason.INVALID_JSON, retriable=None))


def test_selection_keeps_only_the_reasons_models_and_retriable_asked_for():
    selection = Selection(reasons=frozenset({"feature_store_unavailable"}), models=frozenset({"fraud"}), retriable=True)
    assert selection.matches(letter())
    assert not selection.matches(letter(Reason.INVALID_JSON))
    assert not selection.matches(letter(model="other"))
    assert not selection.matches(letter(retriable=False))
    assert not selection.matches(letter(retriable=None))


def test_the_time_range_includes_its_start_and_excludes_its_end():
    selection = Selection(since_ms=1_000, until_ms=2_000)
    assert [selection.matches(letter(timestamp_ms=t)) for t in (999, 1_000, 1_999, 2_000)] == [False, True, True, False]


def test_stats_count_by_reason_model_version_and_retriable():
    counted = stats([letter(), letter(offset=8), letter(Reason.INVALID_JSON, retriable=False, model=None, version=None)])
    assert counted == {
        StatsKey("feature_store_unavailable", "fraud", "1", True): 2,
        StatsKey("invalid_json", None, None, False): 1,
    }


def test_a_replay_sends_the_request_headers_without_ours_plus_where_it_came_from_and_a_count_of_one():
    assert replay_headers(letter(offset=7)) == [*REQUEST_HEADERS, (h.REPLAY_OF, b"deadletter/1/7"), (h.REPLAY_COUNT, b"1")]


def test_a_request_replayed_before_keeps_one_provenance_pair_with_its_count_raised():
    before = [*REQUEST_HEADERS, (h.REPLAY_OF, b"deadletter/0/3"), (h.REPLAY_COUNT, b"2")]
    again = letter(offset=9, request_headers=before)
    assert again.replays == 2
    assert replay_headers(again) == [*REQUEST_HEADERS, (h.REPLAY_OF, b"deadletter/1/9"), (h.REPLAY_COUNT, b"3")]


def test_dead_letters_replayed_as_often_as_allowed_are_capped_and_the_rest_are_sent():
    fresh = letter(offset=1)
    once = letter(offset=2, request_headers=[*REQUEST_HEADERS, (h.REPLAY_OF, b"deadletter/0/0"), (h.REPLAY_COUNT, b"1")])
    unselected = letter(Reason.INVALID_JSON, offset=3)
    plan = plan_replay([fresh, once, unselected], Selection(reasons=frozenset({"feature_store_unavailable"})), 1)
    assert (plan.send, plan.capped) == ([fresh], [once])


def test_a_dead_letter_already_replayed_as_often_as_allowed_is_capped_by_its_replay_of_headers():
    first, second = letter(offset=1), letter(offset=2)
    plan = plan_replay([first, second], Selection(), 1, sent_before={"deadletter/1/1": 1})
    assert (plan.send, plan.capped) == ([second], [first])
