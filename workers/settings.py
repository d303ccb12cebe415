"""Settings of the worker pool and of the ONNX Runtime sessions inside it.

Plain pydantic models: the composition root reads them from the environment and passes them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class RuntimeSettings(BaseModel):
    intra_op_threads: int = Field(1, ge=1)
    """Threads one ONNX Runtime session uses inside an operator. One per actor keeps actors from
    fighting over cores; raise it only with fewer actors than cores."""

    inter_op_threads: int = Field(1, ge=1)
    """Threads for running independent operators in parallel (tree ensembles do not benefit)."""

    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    """``auto`` uses CUDA only when a CUDA session can really be created, else the CPU."""

    tensorrt: bool = False
    """On CUDA, put ONNX Runtime's TensorRT provider in front (where the onnxruntime build and the
    machine have TensorRT): it compiles the model into an engine, worth it for wide models at
    large batches. The first session builds the engine (seconds to minutes), so it is cached."""

    tensorrt_fp16: bool = True
    """Let TensorRT run layers in FP16 where it judges the precision sufficient."""

    tensorrt_cache_dir: Path = Path(".streaminfer/tensorrt")
    """Where built engines are kept, so only the first start of a model version pays for them."""

    io_binding: bool = False
    """Run batches through an I/O binding: inputs copied to the device once, outputs allocated by
    ONNX Runtime where the session runs and copied back in one step. Pays on CUDA with large
    batches; on the CPU it only adds bookkeeping."""

    cpu_mem_arena: bool = False
    """Keep ONNX Runtime's CPU arena: it grows in powers of two to the largest batch seen and never
    gives memory back. Off, each batch's tensors come from the system allocator and are freed
    after it: measured 12 MiB less per session for a 3×1024 perceptron after varied batch sizes,
    no difference for the demo model, and no measurable change in time per batch for either."""

    mem_pattern: bool = False
    """Let ONNX Runtime plan each input shape's memory once and keep the plan; with batches of every
    size up to ``pipeline.max_batch_size`` that keeps one plan per size, for little gain on CPU."""

    inline_below_ms: float = Field(1.0, ge=0)
    """In a consumer actor, a batch the session is expected to compute in under this many
    milliseconds (its last time per row times the rows) runs on the event loop's thread instead
    of the session's worker thread: for a small model the hop between threads costs more CPU than
    overlapping buys. A slower batch still goes to the worker thread, so the loop goes on fetching
    and producing while it computes. 0: every batch on the worker thread."""

    @field_validator("tensorrt_cache_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        """Absolute when the settings load: Ray actors run from another working directory."""
        return path.resolve()


class PoolSettings(BaseModel):
    size: int = Field(2, ge=1)
    """Actors per model. Each holds one session and runs one batch at a time."""

    actor_num_cpus: float = Field(0.5, ge=0)
    """CPUs Ray reserves per actor; fractional so a 2-core laptop fits a pool of 2 and the driver."""

    actor_num_gpus: float = Field(0, ge=0)
    """GPUs Ray reserves per actor; set above 0 on a cluster with GPUs so actors land there."""

    retry_timeout_s: float = Field(60.0, gt=0)
    """How long a batch waits for a dead actor to come back before it fails as ``workers_unavailable``."""

    placement_timeout_s: float = Field(120.0, gt=0)
    """How long start-up waits for Ray to find room for the consumer actors (CPUs and GPUs they
    reserve) before it gives up in one line naming what they asked for and what the cluster has.
    Raise it on a cluster that adds nodes on demand (a GPU node can take minutes to join)."""

    namespace: str = "streaminfer"
    """Ray namespace the named actors live in (the dashboard filters by it)."""

    placement: Literal["SPREAD", "DEFAULT"] = "SPREAD"
    """How Ray places consumer actors and worker pools: ``SPREAD`` over the cluster's nodes (on
    one machine it changes nothing), or ``DEFAULT`` (Ray packs them where resources are). Actors
    that reserve GPUs (``actor_num_gpus``) land only on nodes with GPUs either way."""


class RaySettings(BaseModel):
    address: str | None = None
    """Ray cluster to join (``ray://host:10001`` or ``auto``); None starts a local Ray."""

    num_cpus: int | None = None
    """CPUs a local Ray may use; None lets Ray count them."""

    include_dashboard: bool = True
    """Start a local Ray with its dashboard (the web UI and its nine module processes: metrics, data,
    events, jobs, nodes, reports, Serve, state, Train). Off, Ray keeps one small head process for
    usage stats and ``run`` shows no dashboard URL: Ray's processes measured 338 MiB PSS instead of
    about 550, and a bare ``ray.init`` about 1.4 s quicker (tests/benchmarks/results/startup_footprint.md)."""

    dashboard_host: str = "127.0.0.1"
    """Interface of a local Ray's dashboard. Loopback only: authentication is disabled there."""

    dashboard_port: int = 8265

    worker_niceness: int = Field(0, ge=0, le=19)
    """Nice value of a local Ray's worker processes (Ray's own default is 15, which lets anything
    else on the machine delay inference)."""

    temp_dir: str | None = None
    """Where a local Ray keeps its sockets and logs (keep the path short: socket paths are limited)."""

    repository: Literal["auto", "local", "mirror"] = "auto"
    """How consumer actors read the model repository. ``local``: at ``model_repository``, as the
    driver does (a shared disk). ``mirror``: from a node-local mirror, with aliases, traffic
    policies, tags and the audit log from the control topic and model files from the object
    store or ``model_store``. ``auto``: local where the served models are readable at that
    path, else the mirror."""

    model_store: str | None = None
    """Where mirrors fetch model files: an fsspec URI laid out like the repository
    (``file:///srv/models``, ``s3://bucket/models``, ``gs://...`` with s3fs or gcsfs installed).
    None: from the driver's node, through Ray's object store. Either way checked by sha256."""

    cache_dir: Path | None = None
    """Node-local directory of the mirrors and the model file cache; None: the system's temp dir."""

    publish_every_s: float = Field(0.2, gt=0)
    """How often the driver's registry actor looks for changed registry files to publish."""
