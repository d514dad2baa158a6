"""Fetched records whose header key is not UTF-8 are read with replacement characters, after
the compiled parser read the ones before them; the ones after are read too."""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from streams.runtime import kafka_records


def fetched_bytes(headers_per_record: list[list[tuple[str, bytes]]], compression: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, headers in enumerate(headers_per_record):
        builder.append(offset, timestamp=0, key=None, value=b"v%d" % offset, headers=headers)
    return bytes(builder.build())


def read_all(raw: bytes) -> list[Any]:
    kafka_records.install()
    from aiokafka.consumer import fetcher  # noqa: PLC0415 (the patched module's names)

    records = fetcher.PartitionRecords(
        TopicPartition("coalmine.traces", 0),
        fetcher.MemoryRecords(raw),
        None,
        0,
        None,
        None,
        False,
        READ_UNCOMMITTED,
    )
    return list(records)


def test_a_header_key_that_is_not_utf8_reads_with_replacement_characters() -> None:
    headers = [[("a", b"1")], [("bad?key", b"2")], [("c", b"3")]]
    # The builder encodes keys as UTF-8; the byte is made invalid afterwards, as a producer
    # that does not check would send it.
    raw = fetched_bytes(headers, compression=0).replace(b"bad?key", b"bad\xffkey")
    records = read_all(raw)
    assert [list(r.headers) for r in records] == [
        [("a", b"1")],
        [("bad\ufffdkey", b"2")],
        [("c", b"3")],
    ]
    assert [(r.offset, r.value) for r in records] == [(0, b"v0"), (1, b"v1"), (2, b"v2")]


def test_valid_records_are_read_by_the_compiled_parser_unchanged() -> None:
    raw = fetched_bytes([[("a", b"1")], [("b", b"2")]], compression=1)  # gzip
    assert [(r.offset, list(r.headers)) for r in read_all(raw)] == [
        (0, [("a", b"1")]),
        (1, [("b", b"2")]),
    ]
