"""A labelled Prometheus histogram observed a batch of values at a time.

The pipeline observes one end-to-end latency per answer. ``prometheus_client``'s
``Histogram.observe`` takes a lock twice and walks the buckets in Python for each value: about
0.65 µs, 3–4% of a consumer's whole CPU per answer. Here a fetch's latencies are counted into
buckets in one numpy call (``searchsorted`` + ``bincount``, about 0.03 µs a value) and added under
one lock. The exposition is the same as a ``Histogram``'s: cumulative ``_bucket`` series with
``le`` labels, ``_count`` and ``_sum``, so dashboards, alert rules and recording rules do not
change.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = np.zeros(buckets, dtype=np.int64)
        self.total = 0.0


class BatchHistogram(Collector):
    """Buckets as Prometheus's ``Histogram`` has them (a value equal to a bound counts in that
    bound's bucket; ``+Inf`` is added when missing); one series per tuple of label values."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._bounds = np.array(bounds)
        self._les = [floatToGoString(b) for b in bounds]
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()  # observed on the event loop, collected on the exporter's thread
        registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: Sequence[float] | np.ndarray) -> None:
        """Count ``values`` under the series ``labels`` (one value per label name)."""
        if len(labels) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {labels!r}")
        array = np.asarray(values, dtype=np.float64)
        if not array.size:
            return
        counts = np.bincount(np.searchsorted(self._bounds, array, side="left"), minlength=len(self._bounds))
        total = float(array.sum())
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _Series(len(self._bounds))
            series.counts += counts[: len(self._bounds)]  # NaN sorts past +Inf: counted nowhere, as Prometheus does
            series.total += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            snapshot = [(labels, np.cumsum(s.counts).tolist(), s.total) for labels, s in self._series.items()]
        for labels, cumulative, total in snapshot:
            family.add_metric(list(labels), list(zip(self._les, cumulative)), total)
        yield family
