"""Model files on a node without the driver's disk: the per-node cache named by sha256, and a
worker pool's actor that opens its model from the bytes Ray hands it."""

from __future__ import annotations

import numpy as np

from streaminfer.workers.execution.actor import InferenceActor
from streaminfer.workers.models.distribution import cached_file, digest_of
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RuntimeSettings
from tests.support.models import LOOKUP_MODEL, LOOKUP_TABLE, write_lookup_model


def test_a_file_is_cached_once_under_its_sha256(tmp_path):
    first = cached_file(b"model bytes", tmp_path)
    assert first.name == digest_of(b"model bytes") and first.read_bytes() == b"model bytes"
    written = first.stat().st_mtime_ns
    assert cached_file(b"model bytes", tmp_path) == first and first.stat().st_mtime_ns == written


def test_a_cached_file_that_was_damaged_is_written_again(tmp_path):
    path = cached_file(b"model bytes", tmp_path)
    path.write_bytes(b"damaged")
    assert cached_file(b"model bytes", tmp_path).read_bytes() == b"model bytes"


def test_an_inference_actor_opens_its_model_from_bytes_where_the_path_is_not_readable(tmp_path):
    repository = ModelRepository(tmp_path / "models")
    write_lookup_model(repository)
    model = repository.resolve(LOOKUP_MODEL).model_path
    actor = InferenceActor(str(tmp_path / "elsewhere" / "model.onnx"), RuntimeSettings().model_dump(), "w-0",
                           model.read_bytes())
    scores = actor.infer({"input": np.array([[3, 0]], dtype=np.float32)})["score"]
    assert scores.tolist() == [LOOKUP_TABLE[3]]
