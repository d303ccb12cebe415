"""A consumer actor's process imports only what the pipeline uses: every consumer pays for each
library it loads in memory and start-up time, once per actor."""

from __future__ import annotations

import subprocess
import sys

NOT_IN_A_CONSUMER = ("evidently", "river", "feast", "faust", "pandas", "matplotlib", "sklearn", "scipy", "redis",
                     "pydantic_settings", "streaminfer.settings", "streaminfer.actors.service")


def loaded_after_import(module: str, candidates: tuple[str, ...], then: str = "pass") -> list[str]:
    """Which of ``candidates`` a fresh interpreter holds after importing ``module`` and running ``then``."""
    code = (f"import sys, {module}; {then}; "
            f"print(' '.join(m for m in {candidates!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return result.stdout.split()


def test_the_consumer_actor_module_imports_no_monitoring_feature_store_redis_or_side_service_code() -> None:
    assert loaded_after_import("streaminfer.actors.consumer", NOT_IN_A_CONSUMER) == []


def test_the_side_service_shell_leaves_each_service_s_libraries_to_its_own_actor() -> None:
    assert loaded_after_import("streaminfer.actors.service", ("evidently", "river", "feast", "faust", "pandas",
                                                               "scipy", "onnxruntime", "aiokafka")) == []


def test_the_driver_wiring_leaves_onnx_runtime_to_the_processes_that_run_sessions() -> None:
    assert loaded_after_import("streaminfer.app", ("onnxruntime", "evidently", "river", "feast", "faust", "pandas",
                                                   "redis")) == []


def test_a_consumer_s_feature_enricher_opens_the_store_s_libraries_only_for_an_enriched_request() -> None:
    build = ("from streaminfer.streams.features.settings import FeatureSettings; "
             "streaminfer.streams.pipeline.enrichment.feast_enricher(FeatureSettings())")
    assert loaded_after_import("streaminfer.streams.pipeline.enrichment", ("pyarrow", "feast", "yaml", "redis"),
                               then=build) == []
