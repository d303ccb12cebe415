"""Keys land on the partition any Kafka client would choose: the Java client's murmur2."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streaminfer.streams.pipeline.sending import murmur2


def _signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


@pytest.mark.parametrize(("key", "java"), [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_the_java_clients_hash(key: bytes, java: int):
    assert _signed(murmur2(key)) == java


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafkas_for_any_key(key: bytes):
    assert murmur2(key) == aiokafka_murmur2(key)
