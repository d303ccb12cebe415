"""Personal data in requests: a model's privacy policy, and masking what leaves the inference path.

A model version's ``metadata.json`` may carry a policy::

    "privacy": {
      "features":   {"income": "drop"},
      "parameters": {"entity_id": "hash"}
    }

``features`` name columns of the model's matrix input (``feature_names``); ``parameters`` name
OIP request ``parameters``. Each is ``keep`` (the default for anything not named), ``drop`` (the
value is removed) or ``hash`` (the value is replaced by ``hmac-sha256:<hex>``, keyed with the
``privacy.hash_key`` setting: the same value always gives the same digest under one key, so
joins and aggregates on a hashed entity still work, and nobody without the key can test a guess).

The policy is applied to what is stored, never to what is served: the feature store's prediction
log and entity keys, the monitor's windows and reports, dead letters. Predictions are untouched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, SecretStr

from streaminfer.workers.errors import PrivacyPolicyInvalid

Action = Literal["keep", "drop", "hash"]
HASH_PREFIX = "hmac-sha256:"


class PrivacyPolicy(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """What is personal in a model's requests, and what to do with it before storage."""

    features: dict[str, Action] = {}
    parameters: dict[str, Action] = {}

    @property
    def masks_anything(self) -> bool:
        return any(a != "keep" for a in (*self.features.values(), *self.parameters.values()))

    @property
    def hashes_anything(self) -> bool:
        return "hash" in (*self.features.values(), *self.parameters.values())

    def personal_features(self) -> frozenset[str]:
        """Features that are dropped or hashed: never written as they are."""
        return frozenset(name for name, action in self.features.items() if action != "keep")

    def parameter_action(self, name: str) -> Action:
        return self.parameters.get(name, "keep")


def check_policy(policy: PrivacyPolicy, feature_names: list[str], model: str, version: str) -> None:
    """Refuse a policy whose feature names are not the model's."""
    unknown = sorted(set(policy.features) - set(feature_names))
    if unknown:
        raise PrivacyPolicyInvalid(model, version, unknown, feature_names)


def keyed_hash(key: SecretStr, value: object) -> str:
    """HMAC-SHA256 of the value's text under ``key``: stable across processes and runs."""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    digest = hmac.new(key.get_secret_value().encode(), text.encode(), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest


@dataclass(frozen=True, slots=True)
class Masking:
    """A model version's policy with what applying it needs: the input's feature names and the key.

    >>> masking = Masking(PrivacyPolicy(features={"b": "drop"}, parameters={"entity_id": "hash"}),
    ...                   ("a", "b", "c"), "x", SecretStr("k"))
    >>> masking.mask_inputs([{"name": "x", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}])
    [{'name': 'x', 'shape': [1, 2], 'data': [1.0, 3.0]}]
    """

    policy: PrivacyPolicy
    feature_names: tuple[str, ...]
    input_name: str | None
    """The matrix input whose columns are ``feature_names`` (None: the model has none)."""
    key: SecretStr | None = None
    withhold: bool = False
    """Keep nothing of a request (its policy could not be applied, e.g. a key is missing)."""

    @property
    def masks_anything(self) -> bool:
        return self.withhold or self.policy.masks_anything

    def hash(self, value: object) -> str:
        assert self.key is not None  # ModelVersion.masking refuses a hashing policy without one
        return keyed_hash(self.key, value)

    def mask_parameter(self, name: str, value: object) -> object | None:
        """The value to store for parameter ``name``; None when it is dropped."""
        action = self.policy.parameter_action(name)
        if action == "drop":
            return None
        return self.hash(value) if action == "hash" else value

    def mask_parameters(self, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
        if not parameters:
            return parameters
        masked = {}
        for name, value in parameters.items():
            action = self.policy.parameter_action(name)
            if action != "drop":
                masked[name] = self.hash(value) if action == "hash" else value
        return masked

    def mask_inputs(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OIP input tensors (``name``, ``shape``, ``data``, as JSON objects) with the personal
        columns of the feature matrix dropped or hashed; other tensors as they are."""
        return [self._mask_tensor(t) if t.get("name") == self.input_name else t for t in inputs]

    def mask_request(self, value: bytes | None) -> bytes | None:
        """An OIP request body with the policy applied; None when it cannot be read (so nothing
        of it is kept)."""
        if self.withhold:
            return None
        try:
            request = msgspec.json.decode(value or b"")
            if not isinstance(request, dict) or not isinstance(request.get("inputs", []), list):
                return None
            request["inputs"] = self.mask_inputs(request.get("inputs", []))
            if isinstance(request.get("parameters"), dict):
                request["parameters"] = self.mask_parameters(request["parameters"])
            return msgspec.json.encode(request)
        except (msgspec.MsgspecError, ValueError, TypeError, LookupError):
            return None

    def mask_frame(self, frame: Any) -> Any:
        """A pandas frame of features with personal columns dropped or hashed."""
        frame = frame.drop(columns=[c for c in frame.columns if self.policy.features.get(c) == "drop"])
        for column in [c for c in frame.columns if self.policy.features.get(c) == "hash"]:
            frame[column] = [self.hash(v) for v in frame[column].tolist()]
        return frame

    def _mask_tensor(self, tensor: dict[str, Any]) -> dict[str, Any]:
        shape, data = tensor.get("shape"), tensor.get("data")
        if not isinstance(shape, list) or len(shape) != 2 or not isinstance(data, list):
            return {k: v for k, v in tensor.items() if k != "data"}  # an odd shape: keep none of it
        flat = _flatten(data)
        width = shape[1]
        actions = [self.policy.features.get(n, "keep") for n in self.feature_names[:width]]
        actions += ["keep"] * (width - len(actions))
        kept = [i for i, a in enumerate(actions) if a != "drop"]
        masked: list[Any] = []
        for start in range(0, len(flat), max(width, 1)):
            row = flat[start:start + width]
            masked.extend(self.hash(row[i]) if actions[i] == "hash" else row[i] for i in kept if i < len(row))
        return {**tensor, "shape": [shape[0], len(kept)], "data": masked}


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


class PrivacySettings(BaseModel):
    """``STREAMINFER_PRIVACY__...``: what applying the models' privacy policies needs."""

    hash_key: SecretStr | None = None
    """Key of the HMAC-SHA256 that ``hash`` policies use (``STREAMINFER_PRIVACY__HASH_KEY``); the
    same key everywhere (pipeline, feature worker), or hashed entities no longer join. Required
    as soon as a served model's policy hashes; never logged."""
