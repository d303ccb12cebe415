"""Every topic the system uses, declared once with its partitions and replication factor.

The settings name the topics (``TopicSettings`` for the inference path, ``MonitorTopics``,
``AlertTopics``, ``FeatureTopics``); ``Topology`` says how each one is laid out, and
``streams.clients.ensure_topics`` creates the missing ones. No service picks a partition count:
each asks ``Topology.select`` for the topics it reads and writes, so two services creating the
same topic cannot disagree about it, whichever starts first. The layout:

- the inference path's topics, the monitoring topics (labels, drift, metrics) and the feature
  app's topics and changelogs have ``topics.partitions`` partitions: consumption scales with
  them, and Faust refuses tables whose changelog is partitioned unlike their source;
- the outbox has one partition per alert receiver, and at least ``OUTBOX_MIN_PARTITIONS``:
  notifications are keyed by receiver, so one stalled receiver's backlog does not pause the
  delivery of another's;
- silences and refused notifications have one: few records, read in one order;
- the control topic (``topics.control``) has one and is compacted: the newest record per
  registry document is the document, read in the order the driver published them;
- every topic has ``topics.replication_factor`` replicas.

The pipeline reports its health on the monitoring metrics topic, the one alerting reads: it has
no setting of its own (``Topology.pipeline`` hands the pipeline its topics with that bound in).

>>> from streaminfer.monitoring.settings import MonitorTopics
>>> topology = Topology(TopicSettings(partitions=2), monitor=MonitorTopics(metrics="ops.metrics"))
>>> [(spec.name, spec.partitions) for spec in topology.select(["inference.requests", "monitoring.silences"])]
[('inference.requests', 2), ('monitoring.silences', 1)]
>>> topology.pipeline.health
'ops.metrics'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streaminfer.monitoring.settings import AlertTopics, MonitorTopics
from streaminfer.streams.errors import TopicConflict, UndeclaredTopic
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.settings import TopicSettings

OUTBOX_MIN_PARTITIONS = 4


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    compacted: bool = False
    """Keep only the newest record per key (``cleanup.policy=compact``) instead of deleting by age."""


@dataclass(frozen=True)
class Topology:
    """The system's topics, built from the settings that name them.

    ``receivers`` is the number of alert receivers in the rules file (0 when none is loaded):
    it only sizes the outbox.
    """

    topics: TopicSettings = field(default_factory=TopicSettings)
    monitor: MonitorTopics = field(default_factory=MonitorTopics)
    alerting: AlertTopics = field(default_factory=AlertTopics)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    receivers: int = 0

    @property
    def pipeline(self) -> TopicSettings:
        """The inference path's topics as the pipeline must get them: health reports bound to
        the monitoring metrics topic."""
        return self.topics.reporting_to(self.monitor)

    def pipeline_topics(self) -> list[str]:
        """What each pipeline consumer reads and writes (the control topic: where it follows the
        registry on a node without the repository; the driver's registry actor writes it)."""
        pipeline = self.pipeline
        names = [pipeline.requests, pipeline.predictions, pipeline.deadletter, pipeline.shadow]
        return names + ([pipeline.health] if pipeline.health else []) + [pipeline.control]

    def all(self) -> list[TopicSpec]:
        """Every topic, once; a name given to two topics laid out differently is an error."""
        specs: dict[str, TopicSpec] = {}
        for spec in self._inference() + self._control() + self._monitoring() + self._alerting() + self._features():
            known = specs.setdefault(spec.name, spec)
            if known != spec:
                raise TopicConflict(spec.name, str(known), str(spec))
        return list(specs.values())

    def select(self, names: Iterable[str]) -> list[TopicSpec]:
        """The specs of ``names`` (in that order, without repeats); a name not declared here is
        a bug of the caller, raised as ``UndeclaredTopic``."""
        declared = {spec.name: spec for spec in self.all()}
        wanted = list(dict.fromkeys(names))
        missing = [name for name in wanted if name not in declared]
        if missing:
            raise UndeclaredTopic(missing)
        return [declared[name] for name in wanted]

    # the layout ------------------------------------------------------------------------------

    def _spread(self, *names: str) -> list[TopicSpec]:
        return [TopicSpec(name, self.topics.partitions, self.topics.replication_factor) for name in names]

    def _inference(self) -> list[TopicSpec]:
        topics = self.topics
        return self._spread(topics.requests, topics.predictions, topics.deadletter, topics.shadow)

    def _control(self) -> list[TopicSpec]:
        return [TopicSpec(self.topics.control, 1, self.topics.replication_factor, compacted=True)]

    def _monitoring(self) -> list[TopicSpec]:
        return self._spread(self.monitor.labels, self.monitor.drift, self.monitor.metrics)

    def _alerting(self) -> list[TopicSpec]:
        replicas = self.topics.replication_factor
        outbox = max(OUTBOX_MIN_PARTITIONS, self.receivers)
        return [
            TopicSpec(self.alerting.silences, 1, replicas),
            TopicSpec(self.alerting.outbox, outbox, replicas),
            TopicSpec(self.alerting.deadletter, 1, replicas),
        ]

    def _features(self) -> list[TopicSpec]:
        return self._spread(*self.features.topics.all(), *self.features.changelog_topics())
