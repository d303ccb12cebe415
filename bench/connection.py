"""How every process of the benchmark reaches the broker: one ``KafkaSettings``, never argv.

The harness builds its clients from the settings ``streaminfer bench`` was given (``--settings
FILE``, ``STREAMINFER_KAFKA__*``, ``--bootstrap``), or from a plain ``KafkaSettings`` pointing at
the broker it started itself. Its child processes (the baselines, the fixed-rate load process)
get the same settings through a JSON file written 0600 in the run's work folder and named by
``CLIENTS_FILE_VARIABLE`` in their environment: passwords appear neither on a command line nor in
``ps``. The streaminfer system under test reads its settings as any ``streaminfer run`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from streaminfer.settings import SETTINGS_FILE_VARIABLE
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings, PipelineSettings

CLIENTS_FILE_VARIABLE = "STREAMINFER_BENCH_CLIENTS_FILE"


class BenchConnection(BaseModel):
    """What a child of the harness needs to open its clients: the Kafka settings (with their
    secrets) and the pipeline's fetch settings, so a passthrough fetches as the pipeline does."""

    kafka: KafkaSettings
    pipeline: PipelineSettings = PipelineSettings()

    def clients(self) -> KafkaClients:
        return KafkaClients(self.kafka)


def _reveal(value: object) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the clients file")


def write_connection(connection: BenchConnection, path: Path) -> Path:
    """Write ``connection`` with its secrets to ``path``, readable by this user only."""
    body = json.dumps(connection.model_dump(), default=_reveal).encode()
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(body)
    return path


def read_connection(environ: dict[str, str] | None = None) -> BenchConnection:
    """The connection the harness handed this child (``CLIENTS_FILE_VARIABLE``)."""
    path = (environ if environ is not None else os.environ)[CLIENTS_FILE_VARIABLE]
    return BenchConnection.model_validate_json(Path(path).read_text())


def system_environment(external: bool) -> dict[str, str | None]:
    """Environment changes for a ``streaminfer run`` under test (None removes a variable).

    On a broker of the user's (``external``) it inherits the settings file and the
    ``STREAMINFER_KAFKA__*`` variables, so it connects as the harness does. On the plain broker the
    harness started itself it runs at defaults: a secured cluster's settings would not connect.
    """
    if external:
        return {}
    return {name: None for name in os.environ
            if name == SETTINGS_FILE_VARIABLE or name.startswith("STREAMINFER_KAFKA__")}


def merged_environment(changes: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
