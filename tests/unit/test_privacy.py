"""A model's privacy policy: read from its metadata, checked at load, applied to what is stored."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pandas as pd
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from streaminfer.monitoring.drift.model_watch import new_watch, reference_frame
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.schemas import headers as h
from streaminfer.schemas.deadletter import Reason, read_error_headers
from streaminfer.schemas.errors import RequestError
from streaminfer.settings import AppSettings
from streaminfer.streams.deadletters import DeadLetter, Selection, plan_replay
from streaminfer.streams.features.records import request_part
from streaminfer.streams.pipeline.answers import dead_letter
from streaminfer.streams.pipeline.decoding import decode_record
from streaminfer.streams.settings import TopicSettings
from streaminfer.workers.errors import HashKeyMissing, PrivacyPolicyInvalid
from streaminfer.workers.models.maskings import ModelMaskings
from streaminfer.workers.models.privacy import Masking, PrivacyPolicy, keyed_hash
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from tests.support.models import LOOKUP_MODEL, write_lookup_model

TOPICS = TopicSettings()
KEY = SecretStr("k3y-for-tests")
POLICY = PrivacyPolicy(features={"income": "drop"}, parameters={"entity_id": "hash", "email": "drop"})
MASKING = Masking(POLICY, ("age", "income"), "input", KEY)


def write_private_model(repository: ModelRepository, policy: PrivacyPolicy | None = POLICY,
                        features: tuple[str, ...] = ("age", "income")) -> None:
    write_lookup_model(repository)
    entry = repository.load(LOOKUP_MODEL, "1.0.0")
    metadata = msgspec.structs.replace(entry.metadata, feature_names=list(features), privacy=policy)
    repository.save_metadata(metadata)


def request(entity: object = "customer-7", data: list[float] | None = None, **parameters: object) -> bytes:
    return json.dumps({"id": "r-1", "parameters": {"entity_id": entity, **parameters}, "inputs": [
        {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": data or [30.0, 5100.0, 41.0, 7200.0]},
    ]}).encode()


def consumed(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(TOPICS.requests, 0, 7, 0, 0, b"key", value, None, 1, len(value or b""), headers or [])


class StubPool:
    def names(self) -> list[str]:
        return []

    async def start(self) -> list[dict[str, object]]:
        return []


async def served(repository: ModelRepository) -> ServedModels:
    models = ServedModels(repository, LOOKUP_MODEL, make_pool=lambda entry: StubPool())  # type: ignore[arg-type,return-value]
    await models.serve(LOOKUP_MODEL)
    return models


# the policy in the metadata -------------------------------------------------------------------

def test_the_policy_is_read_from_the_version_s_metadata(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository)
    raw = json.loads((tmp_path / LOOKUP_MODEL / "1.0.0" / "metadata.json").read_text())
    assert raw["privacy"] == {"features": {"income": "drop"}, "parameters": {"entity_id": "hash", "email": "drop"}}
    masking = repository.load(LOOKUP_MODEL, "1.0.0").masking
    assert masking.policy == POLICY and masking.feature_names == ("age", "income") and masking.input_name == "input"


def test_a_model_without_a_policy_keeps_everything(tmp_path):
    repository = ModelRepository(tmp_path)
    write_lookup_model(repository)
    masking = repository.load(LOOKUP_MODEL, "1.0.0").masking
    assert not masking.masks_anything
    assert masking.mask_parameters({"entity_id": "c-1"}) == {"entity_id": "c-1"}


def test_an_unknown_action_is_refused():
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value 'blur'"):
        msgspec.json.decode(b'{"features": {"age": "blur"}}', type=PrivacyPolicy)


def test_a_policy_naming_an_unknown_feature_is_refused_at_load_in_one_line(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository, PrivacyPolicy(features={"incom": "drop"}))
    with pytest.raises(PrivacyPolicyInvalid) as caught:
        repository.load(LOOKUP_MODEL, "1.0.0")
    assert str(caught.value) == (f"privacy policy of {LOOKUP_MODEL} 1.0.0 names unknown features incom "
                                 "(feature_names: age, income)")


def test_a_policy_that_hashes_without_a_key_is_refused_naming_the_setting(tmp_path):
    repository = ModelRepository(tmp_path)
    write_private_model(repository)
    with pytest.raises(HashKeyMissing, match=r"set privacy\.hash_key"):
        _ = repository.resolve(LOOKUP_MODEL).masking


def test_the_key_is_a_secret_setting_that_repr_never_shows(monkeypatch):
    monkeypatch.setenv("STREAMINFER_PRIVACY__HASH_KEY", "s3cret-key")
    settings = AppSettings()
    assert settings.privacy.hash_key is not None and settings.privacy.hash_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(settings) and "s3cret-key" not in repr(Masking(POLICY, (), None, settings.privacy.hash_key))


# the keyed hash --------------------------------------------------------------------------------

def test_the_keyed_hash_is_hmac_sha256_stable_across_calls_and_differs_by_key():
    digest = keyed_hash(KEY, "customer-7")
    assert digest == keyed_hash(SecretStr("k3y-for-tests"), "customer-7")
    assert digest == "hmac-sha256:" + __import__("hmac").new(b"k3y-for-tests", b"customer-7", "sha256").hexdigest()
    assert digest != keyed_hash(SecretStr("other"), "customer-7") and digest != keyed_hash(KEY, "customer-8")
    assert keyed_hash(KEY, 7) == keyed_hash(KEY, "7")  # an id sent as a number or as text joins


# drop, hash and keep on requests and frames ------------------------------------------------------

def test_parameters_are_dropped_hashed_or_kept():
    masked = MASKING.mask_parameters({"entity_id": "customer-7", "email": "a@b.c", "region": "eu"})
    assert masked == {"entity_id": keyed_hash(KEY, "customer-7"), "region": "eu"}


def test_a_dropped_feature_column_leaves_the_tensor_and_its_shape():
    tensors = MASKING.mask_inputs([{"name": "input", "shape": [2, 2], "data": [30.0, 5100.0, 41.0, 7200.0]},
                                   {"name": "other", "shape": [1], "data": [1.0]}])
    assert tensors == [{"name": "input", "shape": [2, 1], "data": [30.0, 41.0]},
                       {"name": "other", "shape": [1], "data": [1.0]}]


def test_a_hashed_feature_column_holds_digests_of_its_values():
    masking = Masking(PrivacyPolicy(features={"age": "hash"}), ("age", "income"), "input", KEY)
    [tensor] = masking.mask_inputs([{"name": "input", "shape": [1, 2], "data": [[30.0, 5100.0]]}])
    assert tensor["data"] == [keyed_hash(KEY, 30.0), 5100.0]


def test_a_whole_request_is_masked_and_anything_else_in_it_kept():
    masked = json.loads(MASKING.mask_request(request(email="a@b.c")) or b"")
    assert masked["id"] == "r-1" and masked["parameters"] == {"entity_id": keyed_hash(KEY, "customer-7")}
    assert masked["inputs"][0]["data"] == [30.0, 41.0] and masked["inputs"][0]["datatype"] == "FP32"


@pytest.mark.parametrize("value", [b"", b"not json", b"[1, 2]", None])
def test_a_request_that_cannot_be_read_masks_to_nothing(value):
    assert MASKING.mask_request(value) is None


def test_feature_frames_lose_dropped_columns_and_hash_hashed_ones():
    masking = Masking(PrivacyPolicy(features={"age": "hash", "income": "drop"}), ("age", "income", "tenure"), "input", KEY)
    frame = masking.mask_frame(pd.DataFrame({"age": [30.0, 41.0], "income": [5100.0, 7200.0], "tenure": [1.0, 2.0]}))
    assert list(frame.columns) == ["age", "tenure"]
    assert frame["age"].tolist() == [keyed_hash(KEY, 30.0), keyed_hash(KEY, 41.0)] and frame["tenure"].tolist() == [1.0, 2.0]


# where the policy is applied ---------------------------------------------------------------------

async def test_a_dead_letter_under_a_policy_holds_the_masked_request_and_says_so(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository)
    models = await served(repository)
    record = consumed(request(data=[30.0, 5100.0, 41.0]))  # 3 values for a [2, 2] tensor: a bad request
    with pytest.raises(RequestError) as caught:
        decode_record(record, models)
    letter = dead_letter(TOPICS, record, caught.value)
    assert (h.PRIVACY_MASKED, b"true") in letter.headers
    assert b"5100" not in (letter.value or b"") and b"customer-7" not in (letter.value or b"")
    assert json.loads(letter.value or b"")["parameters"] == {"entity_id": keyed_hash(KEY, "customer-7")}
    assert read_error_headers(letter.headers)["model"] == LOOKUP_MODEL


async def test_a_dead_letter_that_cannot_be_decoded_keeps_no_value_under_a_policy(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository)
    record = consumed(b'{"inputs": [{"name": "input", "data": [5100.0')
    with pytest.raises(RequestError) as caught:
        decode_record(record, await served(repository))
    letter = dead_letter(TOPICS, record, caught.value)
    assert letter.value is None and (h.PRIVACY_MASKED, b"true") in letter.headers
    assert letter.reason is Reason.INVALID_JSON


async def test_a_dead_letter_of_a_model_without_a_policy_keeps_the_original_bytes(tmp_path):
    repository = ModelRepository(tmp_path)
    write_lookup_model(repository)
    record = consumed(request(data=[30.0]))
    with pytest.raises(RequestError) as caught:
        decode_record(record, await served(repository))
    letter = dead_letter(TOPICS, record, caught.value)
    assert letter.value == record.value and h.PRIVACY_MASKED not in dict(letter.headers)


def test_replay_sends_no_masked_dead_letter_and_counts_them():
    plain = DeadLetter("dl", 0, 1, 0, b"k", b"{}", ())
    masked = DeadLetter("dl", 0, 2, 0, b"k", b"{}", ((h.PRIVACY_MASKED, b"true"),))
    plan = plan_replay([plain, masked], Selection(), max_replays=3)
    assert plan.send == [plain] and plan.masked == [masked]


def test_the_feature_log_gets_the_masked_inputs_and_the_hashed_entity(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository)
    maskings = ModelMaskings(repository, LOOKUP_MODEL)
    part = request_part(request(entity=7), {h.MODEL_NAME: LOOKUP_MODEL.encode()}, 1, "entity_id", maskings)
    assert part is not None and part.entity == keyed_hash(KEY, "7")
    assert json.loads(part.inputs or "") == [{"name": "input", "shape": [2, 1], "data": [30.0, 41.0]}]
    unmasked = request_part(request(entity=7), {}, 1, "entity_id")
    assert unmasked is not None and unmasked.entity == "7" and "5100" in (unmasked.inputs or "")


def test_the_monitor_never_watches_a_personal_feature(tmp_path):
    repository = ModelRepository(tmp_path, KEY)
    write_private_model(repository)
    directory = tmp_path / LOOKUP_MODEL / "1.0.0"
    pd.DataFrame({"age": [30.0, 41.0, 52.0], "income": [5100.0, 7200.0, 6100.0]}).to_parquet(directory / "reference.parquet")
    entry = repository.load(LOOKUP_MODEL, "1.0.0")
    reference = reference_frame(entry)
    assert reference is not None and list(reference.columns) == ["age"]
    watch = new_watch(entry, MonitorSettings(reports_dir=tmp_path / "reports"))
    assert watch.columns == (0,) and watch.window is not None and watch.window.feature_names == ["age"]
    assert watch.watched(np.array([[30.0, 5100.0]])).tolist() == [[30.0]]


async def test_enrichment_looks_an_entity_up_by_its_hash_when_the_model_hashes_it():
    from types import SimpleNamespace

    from streaminfer.schemas.headers import RequestHeaders
    from streaminfer.streams.pipeline.decoding import Decoded
    from streaminfer.streams.pipeline.enrichment import Enricher
    from streaminfer.workers.models.repository import Enrichment
    from streaminfer.workers.routing.served import Route

    looked_up: list[str] = []

    class Store:
        def read(self, entities: list[str], refs: list[str]) -> dict[str, dict[str, float | None]]:
            looked_up.extend(entities)
            return {e: {"requests_60s": 2.0} for e in entities}

    metadata = SimpleNamespace(enrichment=Enrichment(input="input", features=["stats:requests_60s"]), privacy=POLICY)
    served = SimpleNamespace(entry=SimpleNamespace(name="m", version="1", metadata=metadata, masking=MASKING))
    decoded = Decoded(record=None, request_id="r", headers=RequestHeaders(), route=Route(served),  # type: ignore[arg-type]
                      arrays={"input": np.zeros((1, 1), np.float32)}, rows=1, parameters={"entity_id": "customer-7"})
    [(enriched, error)] = await Enricher(Store).enrich([decoded])
    assert error is None and looked_up == [keyed_hash(KEY, "customer-7")]
    assert enriched.arrays["input"].tolist() == [[0.0, 2.0]]


async def test_a_bad_request_of_a_served_model_that_hashes_without_a_key_keeps_nothing_in_its_dead_letter(tmp_path):
    repository = ModelRepository(tmp_path)  # no key: start-up refuses this, a version served later may not
    write_private_model(repository)
    record = consumed(request(data=[30.0]))
    with pytest.raises(RequestError) as caught:
        decode_record(record, await served(repository))
    letter = dead_letter(TOPICS, record, caught.value)
    assert letter.value is None and (h.PRIVACY_MASKED, b"true") in letter.headers
