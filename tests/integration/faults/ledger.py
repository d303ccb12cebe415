"""An exact ledger by request id: what a fault scenario sent against what a reader found answered.

A request counts as answered by a prediction or a dead letter that carries its ``request-id``
header; one id answered twice (two predictions, or a prediction and a dead letter) is one duplicate.
The promise each guarantee makes, as ``LedgerReport.problems`` checks it:

- ``at_least_once``: nothing missing; duplicates are counted and reported, not a failure;
- ``exactly_once``: nothing missing and nothing duplicated, as a ``read_committed`` reader sees it
  (collect with ``Collector(..., isolation_level="read_committed")``).

>>> report = ledger("demo", "exactly_once", ["a", "b"], Counter({"a": 1, "b": 2}), recover_s=1.5)
>>> report.ok, report.duplicated, report.problems()
(False, 1, ['1 duplicated (exactly_once allows none)'])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tests.support.harness import Collected

Guarantee = Literal["at_least_once", "exactly_once"]
GUARANTEES: tuple[Guarantee, ...] = ("at_least_once", "exactly_once")
RECOVERY = "seconds from the moment the fault is in place until the broker appends the first answer after it"
"""What ``recover_s`` measures, in the words the reports print (``traffic.Watch`` times it so)."""
EXAMPLES = 5


@dataclass(frozen=True)
class LedgerReport:
    """The outcome of one scenario run. ``recover_s`` is None where no fault was timed."""

    scenario: str
    guarantee: Guarantee
    sent: int
    answered: int
    missing: int
    duplicated: int
    recover_s: float | None
    missing_examples: tuple[str, ...] = ()
    """Up to five of the missing request ids, to look for in the logs."""
    dead_lettered: int = 0
    """Requests answered by a dead letter instead of a prediction (counted in ``answered``)."""
    unexpected: int = 0
    """Answered ids that were never sent: another run's records in the topic, or a corrupted id."""

    def problems(self) -> list[str]:
        """What breaks the guarantee; empty when the run kept it."""
        found = []
        if self.missing:
            found.append(f"{self.missing} missing (e.g. {', '.join(self.missing_examples)})")
        if self.guarantee == "exactly_once" and self.duplicated:
            found.append(f"{self.duplicated} duplicated (exactly_once allows none)")
        if self.unexpected:
            found.append(f"{self.unexpected} answers to requests never sent")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        """One line for test output and logs."""
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f} s"
        verdict = "ok" if self.ok else "FAILED: " + "; ".join(self.problems())
        return (
            f"{self.scenario} [{self.guarantee}]: sent {self.sent}, answered {self.answered}, missing {self.missing}, "
            f"duplicated {self.duplicated}, dead-lettered {self.dead_lettered}, recovered in {recover}: {verdict}"
        )

    MARKDOWN_HEADER = (
        "| scenario | guarantee | sent | missing | duplicated | dead-lettered | recover s | verdict |\n"
        "|---|---|---:|---:|---:|---:|---:|---|"
    )

    def markdown_row(self) -> str:
        """A row under ``LedgerReport.MARKDOWN_HEADER``."""
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        verdict = "ok" if self.ok else "; ".join(self.problems())
        return (
            f"| {self.scenario} | {self.guarantee} | {self.sent} | {self.missing} | {self.duplicated} "
            f"| {self.dead_lettered} | {recover} | {verdict} |"
        )


def ledger(
    scenario: str,
    guarantee: Guarantee,
    sent: Iterable[str],
    answers: Collected | Mapping[str, int],
    recover_s: float | None,
    *,
    unconfirmed: Iterable[str] = (),
) -> LedgerReport:
    """Compare the request ids ``sent`` (each sent once) with ``answers``: what a ``Collector``
    read, or a count of answers per request id.

    ``unconfirmed``: ids whose send failed without an acknowledgement, so they may or may not be in
    the requests topic (the broker was away). Neither missing nor unexpected; answered twice, a
    duplicate all the same."""
    if isinstance(answers, Collected):
        predicted, dead = answers.ids(answers.predictions), answers.ids(answers.dead_letters)
        counts = predicted + dead
    else:
        counts, dead = Counter(answers), Counter()
    sent_ids = set(sent)
    known = sent_ids | set(unconfirmed)
    missing = sorted(sent_ids - counts.keys())
    return LedgerReport(
        scenario=scenario,
        guarantee=guarantee,
        sent=len(sent_ids),
        answered=len(sent_ids & counts.keys()),
        missing=len(missing),
        duplicated=sum(n - 1 for rid, n in counts.items() if rid in known),
        recover_s=recover_s,
        missing_examples=tuple(missing[:EXAMPLES]),
        dead_lettered=len(sent_ids & dead.keys()),
        unexpected=len(counts.keys() - known),
    )
