"""The fault suite's ledger: what counts as missing, duplicated and unexpected, and which guarantee
each breaks."""

from __future__ import annotations

from collections import Counter

from tests.integration.faults.ledger import LedgerReport, ledger


def test_at_least_once_allows_duplicates_but_not_a_missing_request():
    report = ledger("s", "at_least_once", ["a", "b", "c"], Counter({"a": 1, "b": 3, "c": 1}), recover_s=2.0)
    assert (report.sent, report.answered, report.missing, report.duplicated) == (3, 3, 0, 2)
    assert report.ok
    missing = ledger("s", "at_least_once", ["a", "b"], Counter({"a": 2}), recover_s=None)
    assert missing.problems() == ["1 missing (e.g. b)"] and not missing.ok


def test_exactly_once_fails_on_one_duplicate():
    report = ledger("s", "exactly_once", ["a", "b"], Counter({"a": 1, "b": 2}), recover_s=None)
    assert report.problems() == ["1 duplicated (exactly_once allows none)"]


def test_an_unconfirmed_send_is_neither_missing_nor_unexpected_but_its_repeats_are_duplicates():
    answered = Counter({"a": 1, "maybe-1": 2})
    report = ledger("s", "exactly_once", ["a"], answered, recover_s=None, unconfirmed=["maybe-1", "maybe-2"])
    assert (report.sent, report.missing, report.unexpected, report.duplicated) == (1, 0, 0, 1)


def test_an_answer_to_a_request_never_sent_is_a_problem_for_either_guarantee():
    report = ledger("s", "at_least_once", ["a"], Counter({"a": 1, "stranger": 1}), recover_s=None)
    assert report.unexpected == 1 and not report.ok


def test_one_line_and_markdown_row_carry_the_counts():
    report = ledger("broker down", "exactly_once", ["a", "b"], Counter({"a": 1, "b": 1}), recover_s=12.34)
    assert report.line() == (
        "broker down [exactly_once]: sent 2, answered 2, missing 0, duplicated 0, dead-lettered 0, "
        "recovered in 12.3 s: ok"
    )
    assert report.markdown_row() == "| broker down | exactly_once | 2 | 0 | 0 | 0 | 12.3 | ok |"
    assert LedgerReport.MARKDOWN_HEADER.count("|") == 2 * report.markdown_row().count("|")
