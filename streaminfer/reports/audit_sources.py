"""What the audit report reads from Kafka: the alerting outbox and the dead-letter topic.

Both are read without a consumer group (nothing is committed) from each partition's beginning to
where it ends now, as ``streams.deadletters`` reads dead letters. A topic that does not exist yet
(alerting never ran, nothing was dead-lettered) reads as empty, and the report says so.
"""

from __future__ import annotations

import logging

import msgspec
from aiokafka.errors import KafkaError

from streaminfer.schemas.notifications import Notification, decode_notification
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import KafkaClients, check_reachable, read_to_end, start_client
from streaminfer.streams.deadletters import DeadLetter, read_dead_letters
from streaminfer.streams.security.authorization import refused_as

log = logging.getLogger(__name__)


async def read_sources(settings: AppSettings, idle_timeout_s: float = 30.0
                       ) -> tuple[list[tuple[int, Notification]], list[DeadLetter], dict[str, str]]:
    """The outbox's notifications (with their record times) and every dead letter, and a line per
    topic saying what was read."""
    await check_reachable(settings.kafka)
    clients = KafkaClients(settings.kafka)
    outbox, deadletter = settings.alerting.topics.outbox, settings.topics.deadletter
    try:
        existing = await _existing(clients)
        notifications: list[tuple[int, Notification]] = []
        skipped = 0
        if outbox in existing:
            for record in await read_to_end(clients, outbox, idle_timeout_s=idle_timeout_s):
                try:
                    notifications.append((record.timestamp, decode_notification(record.value or b"")))
                except (msgspec.MsgspecError, ValueError):
                    skipped += 1
        letters = await read_dead_letters(clients, deadletter, idle_timeout_s) if deadletter in existing else []
    except KafkaError as exc:  # a missing ACL becomes the one line that names it
        raise refused_as(exc, reads=[outbox, deadletter], writes=[], settings=settings.kafka) from exc
    sources = {
        "alerts": _said(outbox, outbox in existing, f"{len(notifications)} notifications"
                        + (f", {skipped} unreadable records skipped" if skipped else "")),
        "dead_letters": _said(deadletter, deadletter in existing, f"{len(letters)} dead letters"),
    }
    return notifications, letters, sources


def _said(topic: str, exists: bool, read: str) -> str:
    return f"topic {topic} on Kafka: {read}" if exists else f"topic {topic} does not exist: nothing recorded there"


async def _existing(clients: KafkaClients) -> set[str]:
    admin = clients.admin()
    await start_client(admin, clients.kafka.bootstrap)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()

