"""The output producer's partitioner puts every key where aiokafka's default partitioner (the Java
client's murmur2) does, so packed and unpacked records of one key share a partition across processes."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from app.runtime.outputs import KeyPartitioner


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=50), st.integers(min_value=1, max_value=64))
def test_same_partition_as_aiokafka_default(keys: list[bytes], count: int) -> None:
    every = list(range(count))
    ours, theirs = KeyPartitioner(size=8), DefaultPartitioner()
    for key in keys + keys:  # the second pass comes from the cache
        assert ours(key, every, every) == theirs(key, every, every)


def test_no_key_goes_to_an_available_partition() -> None:
    ours = KeyPartitioner()
    assert {ours(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {ours(None, [0, 1], [])} <= {0, 1}
