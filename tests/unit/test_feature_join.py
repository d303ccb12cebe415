"""The feature app's join: every request with a prediction comes out, whatever a crash leaves."""

from __future__ import annotations

import random

from streaminfer.streams.features import join
from streaminfer.streams.features.records import Part

Record = tuple[str, Part]


def request(request_id: str) -> Part:
    return Part("request", request_id, 1_000, entity=f"e-{request_id}", model="m", inputs="[]")


def prediction(request_id: str) -> Part:
    return Part("prediction", request_id, 1_005, model="m", version="2", score=0.25)


def dead_letter(request_id: str) -> Part:
    return Part("dead_letter", request_id, 1_005)


def test_a_request_and_its_prediction_come_out_once_the_pair_part_is_read():
    first = join.step(None, request("a"))
    assert first == join.Step(request("a"), True)
    second = join.step(first.hold, prediction("a"))
    assert second.hold == request("a") and not second.changed and second.log is None
    assert second.pair is not None
    out = join.step(second.hold, second.pair)
    assert out.hold is None and out.changed
    assert out.scored == join.Scored("a", "e-a", 1_000, 0.25)
    assert out.log == join.PredictionLog("a", "e-a", 1_000, "m", "2", "[]", 0.25)


def test_a_dead_letter_drops_the_waiting_half():
    assert join.step(request("a"), dead_letter("a")) == join.Step(None, True)
    assert join.step(None, dead_letter("a")) == join.Step(None, False)


class Partition:
    """One partition of ``features.joinable`` and the join agent over it: sources arrive one
    per tick, and each tick handles the next record (pair parts are appended as they are sent)."""

    def __init__(self, sources: list[Record]) -> None:
        self.sources, self.log, self.state = list(sources), [], {}
        self.read = 0
        self.emitted: set[str] = set()
        self.sent_by: dict[int, int] = {}  # log index of a pair part -> index of the record that sent it

    def tick(self, emit: bool = True) -> bool:
        if self.sources:
            self.log.append(self.sources.pop(0))
        if self.read >= len(self.log):
            return bool(self.sources)
        key, part = self.log[self.read]
        step = join.step(self.state.get(key), part)
        if step.changed:
            if step.hold is None:
                self.state.pop(key, None)
            else:
                self.state[key] = step.hold
        if step.pair is not None:
            self.sent_by[len(self.log)] = self.read
            self.log.append((key, step.pair))
        if emit and step.log is not None:
            self.emitted.add(step.log.request_id)
        self.read += 1
        return True


def test_a_worker_killed_anywhere_and_replayed_from_its_committed_offset_loses_no_pair():
    """Faust saves table changes and sends outputs through one producer: a SIGKILL can keep a
    table change made after the committed offset and lose that step's outputs and sends. The
    worker reads again from the committed offset with the table as saved."""
    rng = random.Random(3)
    for _ in range(500):
        sources: list[Record] = []
        paired, answered_once = set(), set()
        for n in range(rng.randrange(1, 6)):
            key = f"r{n}"
            ending = rng.choice(["prediction", "prediction", "twice", "dead_letter"])
            parts = [request(key), dead_letter(key) if ending == "dead_letter" else prediction(key)]
            if ending == "twice":  # a prediction sent again by an at-least-once pipeline
                parts.append(prediction(key))
            if ending != "dead_letter":
                paired.add(key)
            if ending == "prediction":
                answered_once.add(key)
            rng.shuffle(parts)
            sources.extend((key, part) for part in parts)
        sources.sort(key=lambda _: rng.random())
        crashed_at = rng.randrange(len(sources) * 2 + 1)
        committed = rng.randrange(crashed_at + 1)
        before = Partition(sources)
        for _ in range(crashed_at):
            before.tick(emit=before.read < committed)  # outputs of records past the committed offset are lost
        committed = min(committed, before.read)
        # the crash: records read from the committed offset on lost what they sent, or not (what
        # was read before the crash had reached the broker)
        lost = {i for i, sender in before.sent_by.items()
                if sender >= committed and i >= before.read and rng.random() < 0.5}
        after = Partition(before.sources)
        after.log = [record for i, record in enumerate(before.log) if i not in lost]
        after.state, after.read, after.emitted = dict(before.state), committed, set(before.emitted)
        while after.tick():
            pass
        assert after.emitted == paired, (sources, crashed_at, committed, lost)
        # nothing waits for ever (a prediction sent twice, the second after the pair, still does)
        assert not set(after.state) & answered_once
