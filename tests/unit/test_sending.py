"""Keys land on the partition any Kafka client would choose: the Java client's murmur2."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streaminfer.streams.pipeline.sending import murmur2, murmur2_many


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


@given(st.lists(st.binary(max_size=40), max_size=300))
def test_keys_hashed_together_get_the_hash_each_gets_alone(keys: list[bytes]):
    assert murmur2_many(keys) == [murmur2(key) for key in keys]


def test_a_batch_of_keys_matches_the_java_clients_hashes():
    keys = [b"abc", b"foobar", b"21", b"a-little-bit-long-string"] * 10
    java = [479470107, -790332482, -973932308, -985981536] * 10
    assert [_signed(h) for h in murmur2_many(keys)] == java
