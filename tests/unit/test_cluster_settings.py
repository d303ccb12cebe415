"""Which runs start the registry actor and the control topic's mirrors, and how actors are placed."""

from __future__ import annotations

import pytest

from streaminfer.app import serves_mirrors
from streaminfer.settings import AppSettings
from streaminfer.workers.settings import PoolSettings


@pytest.mark.parametrize(("ray", "expected"), [
    ({}, False),  # a local Ray is one node: every actor reads the repository, nothing more starts
    ({"address": "auto"}, True),
    ({"address": "auto", "repository": "local"}, False),  # a shared disk: no control topic needed
    ({"repository": "mirror"}, True),
])
def test_the_registry_actor_starts_where_consumers_may_need_a_mirror(ray, expected):
    assert serves_mirrors(AppSettings(ray=ray)) is expected


def test_consumers_and_worker_pools_spread_over_the_nodes_unless_told_otherwise(monkeypatch):
    assert PoolSettings().placement == "SPREAD"
    monkeypatch.setenv("STREAMINFER_POOL__PLACEMENT", "DEFAULT")
    assert AppSettings().pool.placement == "DEFAULT"
    monkeypatch.setenv("STREAMINFER_POOL__PLACEMENT", "PACK")
    with pytest.raises(ValueError, match="SPREAD"):
        AppSettings()
