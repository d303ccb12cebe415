"""The system's topics as the settings name them: one ``Topology`` (``streams.topics``) per
``AppSettings``, for everything the composition root starts or the CLI touches."""

from __future__ import annotations

from streaminfer.settings import AppSettings
from streaminfer.streams.topics import Topology


def topology(settings: AppSettings, receivers: int = 0) -> Topology:
    """Every topic, laid out; ``.pipeline`` is what the pipeline gets: its health reports bound
    to the monitoring metrics topic that alerting reads. ``receivers`` (of the rules file, when
    one is loaded) sizes the outbox."""
    return Topology(settings.topics, settings.monitor.topics, settings.alerting.topics, settings.features, receivers)
