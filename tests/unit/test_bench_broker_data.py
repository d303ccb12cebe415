"""A full benchmark run writes gigabytes into the Apache Kafka it starts; they go with the broker."""

from __future__ import annotations

from pathlib import Path

from bench.main import _Started


class StoppableBroker:
    bootstrap = "127.0.0.1:9092"
    stopped = False

    def __enter__(self) -> StoppableBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = True


def test_a_broker_the_benchmark_started_leaves_no_data_behind_once_stopped(tmp_path: Path) -> None:
    data = tmp_path / "kafka" / "data"
    (data / "requests-0").mkdir(parents=True)
    (data / "requests-0" / "00000000000000000000.log").write_bytes(b"records")
    (tmp_path / "kafka" / "kafka.log").write_text("the broker's own log stays")
    broker = StoppableBroker()

    with _Started(broker, discard=data) as address:
        assert address == broker.bootstrap

    assert broker.stopped and not data.exists()
    assert (tmp_path / "kafka" / "kafka.log").exists()
