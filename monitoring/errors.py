"""Errors of monitoring: drift, experiments, alerting and observability.

Their place in the project's tree, with reasons and ``retriable``, is in ``streaminfer.schemas.errors``.
"""

from __future__ import annotations

from streaminfer.schemas.errors import StreamInferError


class AlertConfigError(StreamInferError):
    """The alert rules file is wrong; the message names the place and the fix."""


class MetricsEndpointInvalid(StreamInferError):
    """A ``/metrics`` endpoint cannot serve as its settings ask (TLS files that do not load); the
    message names the setting, never a password."""


class ExperimentPlanInvalid(StreamInferError):
    """Figures an experiment cannot be planned with (a proportion outside 0..1, a zero effect),
    or a traffic rate Prometheus cannot give; the message names the figure or says what to do."""
