"""A seeded stream of bad (and good) request records, for the fuzz suite and its benchmark script.

Each record is built by one mutator from a valid request, in the spirit of hypothesis'
strategies but drawn from one ``random.Random(seed)``, so a stream of any length is reproducible
from its seed and is generated in one go (a test sends it as one batch). Every record carries a
unique key (``fz-<n>``) and the set of outcomes it may end as: ``None`` for a prediction, else
the dead-letter reasons its content can get. Which reason some mutations get depends on the bytes
drawn (random bytes can be valid JSON), so the allowed set is a set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streaminfer.schemas import headers as h

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class FuzzRecord:
    key: bytes
    value: bytes | None
    headers: Headers
    kind: str
    allowed: frozenset[str | None]
    """Outcomes it may end as: None (a prediction) or dead-letter reasons."""


NOT_JSON = frozenset({"invalid_json"})
NOT_OIP = frozenset({"invalid_json", "schema_violation"})
DOES_NOT_FIT = frozenset({"wrong_shape_or_dtype"})
PREDICTED = frozenset({None})


class FuzzStream:
    """Builds records for a model with one FP32 input ``input_name`` of ``width`` features."""

    def __init__(self, seed: int, rows: np.ndarray, model: str, input_name: str = "input",
                 oversized_bytes: int = 80_000) -> None:
        self.random = random.Random(seed)
        self.rows = rows
        self.model = model
        self.input_name = input_name
        self.oversized_bytes = oversized_bytes
        self._mutators: list[tuple[str, int, Callable[[int], tuple[bytes | None, Headers, frozenset[str | None]]]]] = [
            ("valid", 30, self._valid),
            ("valid_nested", 4, self._valid_nested),
            ("valid_requested_output", 3, self._valid_requested_output),
            ("random_bytes", 5, self._random_bytes),
            ("truncated", 5, self._truncated),
            ("empty", 1, lambda n: (b"", self._headers(n), NOT_JSON)),
            ("wrong_type", 5, self._wrong_type),
            ("missing_field", 4, self._missing_field),
            ("huge_number", 4, self._huge_number),
            ("nan_literal", 3, self._nan_literal),
            ("deep_nesting", 2, self._deep_nesting),
            ("unicode_id", 3, self._unicode_id),
            ("zero_or_negative_shape", 3, self._bad_shape),
            ("length_mismatch", 3, self._length_mismatch),
            ("unknown_datatype", 3, self._unknown_datatype),
            ("bool_tensor", 2, self._bool_tensor),
            ("unknown_output", 2, self._unknown_output),
            ("oversized", 1, self._oversized),
            ("bad_header", 4, self._bad_header),
            ("bad_deadline", 3, self._bad_deadline),
            ("unknown_model", 2, self._unknown_model),
        ]
        self._weights = [weight for _, weight, _ in self._mutators]

    def records(self, count: int) -> list[FuzzRecord]:
        out = []
        for n in range(count):
            kind, _, mutate = self.random.choices(self._mutators, self._weights)[0]
            value, headers, allowed = mutate(n)
            out.append(FuzzRecord(f"fz-{n}".encode(), value, headers, kind, allowed))
        return out

    # building blocks -------------------------------------------------------------------------

    def _row(self) -> list[float]:
        return [float(v) for v in self.rows[self.random.randrange(len(self.rows))]]

    def _body(self, n: int, **changes: object) -> dict:
        tensor = {"name": self.input_name, "shape": [1, self.rows.shape[1]], "datatype": "FP32", "data": self._row()}
        tensor.update({k[len("tensor_"):]: v for k, v in changes.items() if k.startswith("tensor_")})
        body: dict = {"id": f"fz-{n}", "inputs": [tensor]}
        body.update({k: v for k, v in changes.items() if not k.startswith("tensor_")})
        return body

    def _headers(self, n: int, model: bytes | None = None) -> Headers:
        return [(h.MODEL_NAME, model if model is not None else self.model.encode()), (h.REQUEST_ID, f"fz-{n}".encode())]

    def _json(self, body: object) -> bytes:
        return json.dumps(body).encode()

    # mutators: each returns (value, headers, allowed outcomes) ---------------------------------

    def _valid(self, n: int):
        return self._json(self._body(n)), self._headers(n), PREDICTED

    def _valid_nested(self, n: int):
        rows = [self._row() for _ in range(self.random.randint(1, 3))]
        body = self._body(n, tensor_shape=[len(rows), self.rows.shape[1]], tensor_data=rows)
        return self._json(body), self._headers(n), PREDICTED

    def _valid_requested_output(self, n: int):
        return self._json(self._body(n, outputs=[{"name": "label"}])), self._headers(n), PREDICTED

    def _random_bytes(self, n: int):
        value = self.random.randbytes(self.random.randint(1, 300))
        return value, self._headers(n), NOT_OIP

    def _truncated(self, n: int):
        whole = self._json(self._body(n))
        return whole[: self.random.randint(1, len(whole) - 1)], self._headers(n), NOT_JSON

    def _wrong_type(self, n: int):
        body = self._body(n)
        wrong = self.random.choice([None, "text", 3.5, True, {"a": 1}, [1, 2]])
        where = self.random.choice(["id", "inputs", "shape", "datatype", "data", "name", "parameters", "outputs"])
        if where in ("id", "inputs", "parameters", "outputs"):
            body[where] = wrong
        else:
            body["inputs"][0][where] = wrong if where != "data" else [wrong] * self.rows.shape[1]
        allowed = NOT_OIP | DOES_NOT_FIT | PREDICTED  # e.g. data of True's is a wrong dtype, {"a": 1} parameters fine
        return self._json(body), self._headers(n), allowed

    def _missing_field(self, n: int):
        body = self._body(n)
        field = self.random.choice(["inputs", "name", "shape", "datatype", "data"])
        if field == "inputs":
            del body["inputs"]
        else:
            del body["inputs"][0][field]
        return self._json(body), self._headers(n), NOT_OIP

    def _huge_number(self, n: int):
        literal = self.random.choice(["1e308", "-1e300", "1e39", "1e309", "-1e400", "1" + "0" * 400])
        data: list[object] = list(self._row())
        data[self.random.randrange(len(data))] = "HOLE"
        text = self._json(self._body(n, tensor_data=data)).decode().replace('"HOLE"', literal)
        return text.encode(), self._headers(n), frozenset({"value_out_of_range"})

    def _nan_literal(self, n: int):
        text = self._json(self._body(n, tensor_data=[0.5] * self.rows.shape[1])).decode()
        literal = self.random.choice(["NaN", "Infinity", "-Infinity", "nan", "inf"])
        return text.replace("0.5", literal, 1).encode(), self._headers(n), NOT_JSON

    def _deep_nesting(self, n: int):
        depth = self.random.choice([600, 1_000, 5_000])
        where = self.random.choice(["parameters", "id", "data"])
        nested = "[" * depth + "1" + "]" * depth
        body = self._json(self._body(n, parameters={"x": "HOLE"} if where == "parameters" else None)).decode()
        if where == "parameters":
            text = body.replace('"HOLE"', nested)
        elif where == "id":
            text = body.replace(f'"id": "fz-{n}"', f'"id": {nested}')
        else:
            text = body.replace('"data": [', f'"data": [{nested}, ', 1)
        # 600 levels in parameters is within the decoder's limit: any JSON goes there
        allowed = frozenset({"schema_violation", None}) if where == "parameters" and depth < 1_000 else frozenset({"schema_violation"})
        return text.encode(), self._headers(n), allowed

    def _unicode_id(self, n: int):
        alphabet = "αβγ中文字😀🚀\u200b\u202e\U0010fffdé\x00\\\"\n"
        rid = "".join(self.random.choice(alphabet) for _ in range(self.random.randint(1, 40)))
        headers = [(h.MODEL_NAME, self.model.encode()), (h.REQUEST_ID, rid.encode())]
        return self._json(self._body(n, id=rid)), headers, PREDICTED

    def _bad_shape(self, n: int):
        shape = self.random.choice([[0, self.rows.shape[1]], [-1, self.rows.shape[1]], [1, -30], [1, 0], [], [0]])
        return self._json(self._body(n, tensor_shape=shape)), self._headers(n), DOES_NOT_FIT

    def _length_mismatch(self, n: int):
        data = self._row()
        data = data[: self.random.randint(0, len(data) - 1)] if self.random.random() < 0.5 else data + data[:3]
        return self._json(self._body(n, tensor_data=data)), self._headers(n), DOES_NOT_FIT

    def _unknown_datatype(self, n: int):
        datatype = self.random.choice(["FP8", "BYTES", "float32", "", "FP32 ", "INT64"])
        return self._json(self._body(n, tensor_datatype=datatype)), self._headers(n), DOES_NOT_FIT

    def _bool_tensor(self, n: int):
        data = [self.random.random() < 0.5 for _ in range(self.rows.shape[1])]
        return self._json(self._body(n, tensor_datatype="BOOL", tensor_data=data)), self._headers(n), DOES_NOT_FIT

    def _unknown_output(self, n: int):
        return self._json(self._body(n, outputs=[{"name": "no-such-output"}])), self._headers(n), DOES_NOT_FIT

    def _oversized(self, n: int):
        body = self._body(n, parameters={"padding": "x" * self.oversized_bytes})
        return self._json(body), self._headers(n), frozenset({"payload_too_large"})

    def _bad_header(self, n: int):
        name = self.random.choice([h.MODEL_NAME, h.MODEL_VERSION, h.REQUEST_ID])
        headers = [(k, v) for k, v in self._headers(n) if k != name] + [(name, b"\xff\xfe" + self.random.randbytes(4))]
        return self._json(self._body(n)), headers, frozenset({"invalid_header"})

    def _bad_deadline(self, n: int):
        deadline = self.random.choice([b"soon", b"", b"12.5", b"\xff", b"1e3", b"-"])
        allowed = PREDICTED if deadline == b"" else frozenset({"invalid_header"})
        return self._json(self._body(n)), [*self._headers(n), (h.DEADLINE_MS, deadline)], allowed

    def _unknown_model(self, n: int):
        return self._json(self._body(n)), self._headers(n, model=b"no-such-model"), frozenset({"unknown_model"})
