"""Wire format: OIP v2 JSON bodies, Kafka headers, dead-letter metadata, and their JSON Schemas.

This package imports no other package of the project; everything else builds on it.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent


def schema_path(name: str) -> Path:
    """Path of a JSON Schema shipped with the package: ``request``, ``prediction`` or ``deadletter``."""
    return SCHEMA_DIR / f"{name}.schema.json"
