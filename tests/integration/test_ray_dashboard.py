"""The pool's actors are visible, by name, in the Ray dashboard."""

from __future__ import annotations

import json
import urllib.request

from streaminfer.demo.model import DEMO_MODEL
from tests.support.harness import app_settings, started


def dashboard_actor_names(dashboard: str, namespace: str) -> set[str]:
    url = f"{dashboard}/api/v0/actors?limit=1000&detail=true"
    with urllib.request.urlopen(url, timeout=20) as response:
        body = json.load(response)
    actors = body["data"]["result"]["result"]
    return {a["name"] for a in actors if a.get("ray_namespace") == namespace and a["state"] == "ALIVE"}


async def test_dashboard_lists_the_pools_named_actors(tansu, topics, model_repo, ray_dashboard):
    from streaminfer.streams.settings import KafkaSettings

    settings = app_settings(KafkaSettings(bootstrap=tansu.bootstrap, group_id="dash"), topics, model_repo, pool_size=2)
    app = await started(settings)
    try:
        names = dashboard_actor_names(ray_dashboard, settings.pool.namespace)
    finally:
        await app.stop()
    assert names == {f"{DEMO_MODEL}-0", f"{DEMO_MODEL}-1"}
