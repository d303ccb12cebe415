"""Prometheus file-based service discovery: the file that lists every metrics endpoint.

Each process of the system (the driver, every consuming actor, the monitor) serves its own
``/metrics``; actors get a free port and a new one when Ray restarts them. Rather than one
registry that silently misses other processes, the driver writes their addresses to a file in
Prometheus's ``file_sd`` format and rewrites it when they change; Prometheus picks changes up
without a reload (``file_sd_configs`` in ``infra/prometheus/prometheus.yml``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse


@dataclass(frozen=True)
class ScrapeTarget:
    url: str
    """The ``/metrics`` URL."""

    component: str
    """driver, consumer, worker or monitor."""

    labels: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return urlparse(self.url).netloc


def file_sd(targets: list[ScrapeTarget], job: str = "streaminfer") -> list[dict[str, object]]:
    """One group per target, so each keeps its own labels."""
    return [
        {"targets": [t.address], "labels": {"job": job, "component": t.component, **t.labels}}
        for t in sorted(targets, key=lambda t: (t.component, t.address))
    ]


def write_targets(path: Path, targets: list[ScrapeTarget]) -> bool:
    """Write atomically (Prometheus may read at any moment); returns whether anything changed."""
    body = json.dumps(file_sd(targets), indent=2) + "\n"
    if path.is_file() and path.read_text() == body:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(body)
    os.replace(temporary, path)
    return True
