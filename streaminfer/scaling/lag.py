"""The consumer group's lag on the requests topic, as the broker sees it.

Per partition: the end offset minus the group's committed offset (the beginning offset where the
group has committed nothing yet: the consumers start at the earliest record). This is what the
whole group has left to answer, whichever member owns the partition, and it does not depend on
any member answering: a member that is stuck or gone still shows as lag here.

Brokers that report a partition's end as its last batch's base offset + 1 (the embedded one)
make this a slight underestimate while records arrive; it is never negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.errors import TopicsMissing


@dataclass(frozen=True)
class GroupLag:
    by_partition: dict[int, int]
    """Records behind, per partition of the requests topic."""

    @property
    def total(self) -> int:
        return sum(self.by_partition.values())

    @property
    def partitions(self) -> int:
        return len(self.by_partition)


class LagReader:
    """Reads ``GroupLag`` for ``clients.kafka.group_id`` on ``topic``: the admin client (built by
    ``KafkaClients``) for the partitions and the committed offsets, and a consumer that joins no
    group for the end offsets. ``start()``/``stop()`` are safe to call twice."""

    def __init__(self, clients: KafkaClients, topic: str) -> None:
        self._clients = clients
        self._topic = topic
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._admin is not None:
            return
        bootstrap = self._clients.kafka.bootstrap
        admin = self._clients.admin()
        await start_client(admin, bootstrap)
        offsets = self._clients.consumer(group_id=None, isolation_level="read_uncommitted")
        try:
            await start_client(offsets, bootstrap)
        except BaseException:
            await admin.close()
            raise
        self._admin, self._offsets = admin, offsets

    async def stop(self) -> None:
        admin, self._admin = self._admin, None
        offsets, self._offsets = self._offsets, None
        if offsets is not None:
            await offsets.stop()
        if admin is not None:
            await admin.close()

    async def read(self) -> GroupLag:
        assert self._admin is not None and self._offsets is not None, "start() first"
        partitions = await self._partitions()
        # named explicitly: the embedded broker's OffsetFetch answers only for partitions it is asked about
        committed = await self._admin.list_consumer_group_offsets(self._clients.kafka.group_id, partitions=partitions)
        ends = await self._offsets.end_offsets(partitions)
        positions = {tp: committed[tp].offset for tp in partitions if tp in committed and committed[tp].offset >= 0}
        missing = [tp for tp in partitions if tp not in positions]
        if missing:
            positions.update(await self._offsets.beginning_offsets(missing))
        return GroupLag({tp.partition: max(0, ends[tp] - positions[tp]) for tp in partitions})

    async def _partitions(self) -> list[TopicPartition]:
        """Read every time: partitions can be added to a topic while the group runs."""
        assert self._admin is not None
        described = await self._admin.describe_topics([self._topic])
        found = [t for t in described if t["topic"] == self._topic and not t["error_code"] and t["partitions"]]
        if not found:
            raise TopicsMissing([self._topic], self._clients.kafka.bootstrap)
        return [TopicPartition(self._topic, p["partition"]) for p in found[0]["partitions"]]
