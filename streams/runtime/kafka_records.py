"""Records whose header key is not UTF-8 are read, not fatal.

Kafka's protocol declares a header key a UTF-8 string but brokers do not check it, so any
producer can send ``bad\\xffkey``. aiokafka (which Faust consumes with) decodes header keys
strictly: one such record raises ``UnicodeDecodeError`` out of its fetcher, the worker
crashes, and after a restart it meets the same record again, for good. Kafka's Java client
decodes the same bytes with replacement characters; :func:`install` makes aiokafka do that
too, only for fetched data that needs it: the fast compiled parser reads everything else, and
a fetch it fails on is read again by aiokafka's pure-Python parser with header keys decoded
leniently (records already returned are skipped by offset, as aiokafka does for any re-read).
The record then goes through validation like any other, so it is stored or dead-lettered.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, SupportsIndex

from aiokafka.consumer import fetcher
from aiokafka.record import memory_records
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.legacy_records import LegacyRecordBatch

_LOG_OVERHEAD = struct.calcsize(">qi")
_LENGTH_OFFSET = struct.calcsize(">q")
_MAGIC_OFFSET = struct.calcsize(">qii")


class _LenientBytes(bytes):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return super().decode(encoding, "replace")


class _LenientBuffer(bytearray):
    """A record batch's bytes whose slices decode with replacement characters: the parser
    decodes header keys with ``buffer[start:end].decode("utf-8")``."""

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        piece = super().__getitem__(index)
        return _LenientBytes(piece) if isinstance(index, slice) else piece


# aiokafka's record modules carry no type information.
class _LenientRecordBatch(_DefaultRecordBatchPy):  # type: ignore[misc]
    _buffer: bytearray

    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        if not isinstance(self._buffer, _LenientBuffer):
            self._buffer = _LenientBuffer(self._buffer)


def _batch_slices(raw: bytes) -> Iterator[memoryview]:
    view = memoryview(raw)
    position = 0
    while len(view) - position >= _LOG_OVERHEAD:
        length = struct.unpack_from(">i", view, position + _LENGTH_OFFSET)[0]
        end = position + _LOG_OVERHEAD + length
        if end > len(view):  # a partial batch at the end of a fetch, as aiokafka ignores it
            return
        yield view[position:end]
        position = end


class _LenientRecords:
    """The batches of a fetch, parsed by aiokafka's pure-Python parser, header keys leniently."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._slices = _batch_slices(raw)
        self._next = next(self._slices, None)

    def size_in_bytes(self) -> int:
        return len(self._raw)

    def has_next(self) -> bool:
        return self._next is not None

    def next_batch(self) -> Any:
        batch, self._next = self._next, next(self._slices, None)
        if batch is None:
            return None
        magic = batch[_MAGIC_OFFSET]
        return _LenientRecordBatch(batch) if magic >= 2 else LegacyRecordBatch(batch, magic)


class _RecordsKeepingBytes:
    """aiokafka's own (compiled) records of a fetch, with the bytes kept for a second read."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._records = memory_records.MemoryRecords(raw)

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        return self._records.next_batch()


class _TolerantPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    _records: _RecordsKeepingBytes | _LenientRecords

    def _unpack_records(self) -> Iterator[Any]:
        try:
            yield from super()._unpack_records()
        except UnicodeDecodeError:
            assert isinstance(self._records, _RecordsKeepingBytes)  # install() made it so
            self._records = _LenientRecords(self._records.raw)
            yield from super()._unpack_records()


def install() -> None:
    """Make aiokafka's fetcher read records with non-UTF-8 header keys (idempotent)."""
    fetcher.MemoryRecords = _RecordsKeepingBytes
    fetcher.PartitionRecords = _TolerantPartitionRecords
