"""One exception tree: every error of the project is in the root module's docstring, under its
base, with the ``reason`` and ``retriable`` it declares; per-request failures carry their
dead-letter reason; errors keep their facts; and a dead letter says what its error's type says."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord

import bench
import streaminfer
from streaminfer.schemas import errors as root
from streaminfer.schemas.deadletter import Reason, read_error_headers
from streaminfer.schemas.errors import RequestError, StreamInferError
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.errors import DeadlineExceeded, FeatureStoreUnavailable, TopicsMissing
from streaminfer.streams.pipeline.answers import answer
from streaminfer.streams.pipeline.batcher import DynamicBatcher
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.settings import TopicSettings
from streaminfer.workers.errors import InferenceFailed, PolicyInvalid, UnknownModel, WorkersUnavailable
from streaminfer.workers.routing.served import Route

TOPICS = TopicSettings()

#: Failures of one request that are not the request's fault, so not ``RequestError``s.
TRANSIENT_PER_REQUEST = (WorkersUnavailable, FeatureStoreUnavailable)

_CONNECTOR = re.compile(r"[├└]── ")
_ENTRY = re.compile(r"(?P<name>\w+)(?:\s+\[(?P<attrs>[^\]]*)\])?")


#: Modules not importable here: the MLServer runtime runs inside MLServer's own environment.
ELSEWHERE = {"bench.mlserver_runtime"}


def _import_everything() -> None:
    for package in (streaminfer, bench):
        root_dir = Path(package.__file__).parent
        for info in pkgutil.walk_packages([str(root_dir)], prefix=f"{package.__name__}."):
            if not info.name.endswith("__main__") and info.name not in ELSEWHERE:
                importlib.import_module(info.name)


def _project_errors() -> list[type[StreamInferError]]:
    """Every subclass of the root, at any depth, defined in the project (not in tests, not by Ray)."""
    _import_everything()
    found: dict[str, type[StreamInferError]] = {}
    todo = [StreamInferError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith(("streaminfer.", "bench.")) and sub not in found.values():
                assert sub.__name__ not in found, f"two errors named {sub.__name__}"
                found[sub.__name__] = sub
                todo.append(sub)
    return sorted(found.values(), key=lambda cls: cls.__name__)


class TreeEntry:
    def __init__(self, parent: str | None, attrs: str | None) -> None:
        self.parent = parent
        parts = [part.strip() for part in (attrs or "").split(",") if part.strip()]
        self.retriable = "retriable" in parts
        self.reasons = [part for part in parts if part != "retriable"]


def _tree() -> dict[str, TreeEntry]:
    """The tree in the root module's docstring: each class, its parent and its ``[attrs]``."""
    assert root.__doc__ is not None
    lines = root.__doc__.split("    StreamInferError\n", 1)[1].split("\n\n", 1)[0].splitlines()
    tree = {"StreamInferError": TreeEntry(None, None)}
    parents = ["StreamInferError"]
    for line in lines:
        connector = _CONNECTOR.search(line)
        if connector is None:
            continue  # a description carried over to the next line
        depth = (connector.start() - 4) // 4 + 1
        entry = _ENTRY.match(line, connector.end())
        assert entry is not None, line
        del parents[depth:]
        tree[entry["name"]] = TreeEntry(parents[-1], entry["attrs"])
        parents.append(entry["name"])
    return tree


ERRORS = _project_errors()
TREE = _tree()


def test_the_walk_finds_errors_of_every_package():
    packages = {cls.__module__.split(".")[1] for cls in ERRORS if cls.__module__.startswith("streaminfer.")}
    assert {"schemas", "workers", "streams", "monitoring", "errors"} <= packages
    assert len(ERRORS) >= 30


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_is_in_the_root_docstring_under_its_base(cls):
    assert cls.__name__ in TREE, f"{cls.__module__}.{cls.__name__} is missing from the tree in schemas/errors.py"
    assert TREE[cls.__name__].parent == cls.__bases__[0].__name__


def test_the_tree_names_no_error_that_does_not_exist():
    assert set(TREE) - {cls.__name__ for cls in ERRORS} == {"StreamInferError"}


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_the_tree_states_the_reason_and_retriable_each_error_declares(cls):
    assert type(cls.retriable) is bool
    assert cls.reason is None or isinstance(cls.reason, Reason)
    entry = TREE[cls.__name__]
    assert entry.reasons == ([cls.reason.value] if cls.reason is not None else [])
    assert entry.retriable is cls.retriable


@pytest.mark.parametrize("cls", [c for c in ERRORS if issubclass(c, RequestError) and c is not RequestError],
                         ids=lambda cls: cls.__name__)
def test_every_request_error_has_a_dead_letter_reason_and_is_final(cls):
    assert isinstance(cls.reason, Reason)
    assert cls.retriable is False


@pytest.mark.parametrize("cls", TRANSIENT_PER_REQUEST, ids=lambda cls: cls.__name__)
def test_transient_per_request_failures_have_their_own_reason_and_are_retriable(cls):
    assert isinstance(cls.reason, Reason) and cls.reason is not Reason.INFERENCE_ERROR
    assert cls.retriable is True


def test_errors_that_are_not_a_request_s_failure_have_no_reason():
    per_request = [c for c in ERRORS if issubclass(c, (RequestError, *TRANSIENT_PER_REQUEST))]
    assert [c.__name__ for c in ERRORS if c.reason is not None and c not in per_request] == []


@pytest.mark.parametrize(
    ("error", "facts"),
    [
        (UnknownModel("m", "2.0.0", ["m/1.0.0"]), {"name": "m", "version": "2.0.0", "known": ["m/1.0.0"]}),
        (WorkersUnavailable("m", "no actor answered within 60 s"), {"workers": "m", "detail": "no actor answered within 60 s"}),
        (DeadlineExceeded(1_700_000_000_000, 12), {"deadline_ms": 1_700_000_000_000, "late_ms": 12}),
        (PolicyInvalid(Path("/repo/m/traffic.json"), "arm names must differ"),
         {"path": Path("/repo/m/traffic.json"), "problem": "arm names must differ"}),
        (TopicsMissing(["a", "b"], "localhost:9092"), {"topics": ["a", "b"], "bootstrap": "localhost:9092"}),
    ],
    ids=["UnknownModel", "WorkersUnavailable", "DeadlineExceeded", "PolicyInvalid", "TopicsMissing"],
)
def test_errors_keep_their_facts_and_pickle_back_whole(error, facts):
    """Facts stay attributes, and an error crosses a process boundary (Ray) with them."""
    for copy in (error, pickle.loads(pickle.dumps(error))):
        assert type(copy) is type(error) and str(copy) == str(error)
        assert {name: getattr(copy, name) for name in facts} == facts


def test_messages_are_built_from_the_facts():
    assert str(UnknownModel("m", "2.0.0", ["m/1.0.0"])) == "model 'm' version '2.0.0' is not in the repository (known: m/1.0.0)"
    assert str(DeadlineExceeded(1_000, 12)) == "deadline 1000 passed 12 ms before the request could run"


# dead letters --------------------------------------------------------------------------------


def _item(offset: int) -> Decoded:
    served = SimpleNamespace(entry=SimpleNamespace(name="m", version="1.0.0", masking=None))
    record = ConsumerRecord(TOPICS.requests, 0, offset, 1_700_000_000_000, 0, b"key", b"{}", None, 3, 2, [])
    route = Route(served, "", "", None)  # type: ignore[arg-type]
    return Decoded(record=record, request_id=f"r{offset}", headers=RequestHeaders(), route=route,
                   arrays={"input": np.zeros((1, 2), np.float32)}, rows=1)


async def _dead_letters_of(failure: BaseException, items: int) -> list[dict[str, object]]:
    """Run ``items`` requests through a batcher whose batch fails with ``failure`` (split on
    ``InferenceFailed``, as the per-version batchers do) and answer each outcome."""

    async def run(batch: list[Decoded]) -> list[object]:
        raise failure

    batcher: DynamicBatcher[Decoded, object] = DynamicBatcher(
        run, max_batch_size=items, max_wait_ms=0, split_on=(InferenceFailed,))
    batcher.start()
    try:
        decoded = [_item(offset) for offset in range(items)]
        outcomes = await batcher.submit(decoded)
    finally:
        await batcher.stop()
    answers = [answer(TOPICS, item, outcome) for item, outcome in zip(decoded, outcomes)]  # type: ignore[arg-type]
    assert all(out.topic == TOPICS.deadletter and out.value == b"{}" for out in answers)
    return [read_error_headers(out.headers) for out in answers]


async def test_a_batch_whose_workers_stay_down_dead_letters_each_request_as_workers_unavailable_and_retriable():
    letters = await _dead_letters_of(WorkersUnavailable("m", "no actor answered within 60 s"), items=3)
    assert [(letter["reason"], letter["retriable"], letter["offset"]) for letter in letters] == [
        ("workers_unavailable", True, 0), ("workers_unavailable", True, 1), ("workers_unavailable", True, 2)]
    assert letters[0]["message"] == "no worker of m is available: no actor answered within 60 s"


async def test_a_request_onnx_runtime_rejects_is_an_inference_error_and_not_retriable():
    [letter] = await _dead_letters_of(InferenceFailed("onnxruntime failed on a batch: bad input"), items=1)
    assert (letter["reason"], letter["retriable"]) == ("inference_error", False)
