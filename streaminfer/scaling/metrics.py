"""Prometheus metrics of the autoscaler, kept by the driver: desired and running consumers, the
lag it read, each decision with its reason and the lag behind it, and how long changes took.
Registered on the driver's registry, served with its ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ScalingMetrics:
    """The autoscaler's readings and decisions, kept by the driver (``streaminfer.scaling``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.desired = Gauge(
            "streaminfer_consumers_desired", "Consumer actors the autoscaler wants now.", registry=registry,
        )
        self.running = Gauge(
            "streaminfer_consumers_running", "Consumer actors in the group now (draining ones not counted).",
            registry=registry,
        )
        self.group_lag = Gauge(
            "streaminfer_scaling_group_lag_records",
            "The group's lag on the requests topic at the autoscaler's latest reading (end minus committed offsets).",
            registry=registry,
        )
        self.lag_growth = Gauge(
            "streaminfer_scaling_lag_growth_records_per_second",
            "How fast the group's lag grew between the autoscaler's last two readings (negative: it shrank).",
            registry=registry,
        )
        self.limit = Gauge(
            "streaminfer_scaling_limit_consumers",
            "Most consumer actors each bound leaves room for (max, partitions, cpus, gpus).",
            ["limit"], registry=registry,
        )
        self.decisions = Counter(
            "streaminfer_scaling_decisions",
            "Autoscaler decisions by direction (up, down, hold) and reason; holds only when a change was "
            "wanted and a cool-down or a bound kept it.",
            ["direction", "reason"], registry=registry,
        )
        self.decision_lag = Gauge(
            "streaminfer_scaling_decision_lag_records",
            "The group's lag that drove the latest decision of each direction and reason.",
            ["direction", "reason"], registry=registry,
        )
        self.action_seconds = Histogram(
            "streaminfer_scaling_action_seconds",
            "Time to carry out a change: up, until the new actors own partitions; down, until the drained ones left.",
            ["direction"], buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=registry,
        )
