"""Which failed writes are retried, blamed on the rows, or stop the worker."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)

from streams.failures import Failure, classify, clickhouse_code, one_line


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationalError("Failed to read response data from server"), Failure.TRANSIENT),
        (
            DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space"),
            Failure.TRANSIENT,
        ),
        (DatabaseError("Code: 242. DB::Exception: Table is in readonly mode"), Failure.TRANSIENT),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"), Failure.TRANSIENT),
        (DatabaseError("Code: 252. DB::Exception: Too many parts (3000)"), Failure.TRANSIENT),
        (DatabaseError("Code: 159. DB::Exception: Timeout exceeded"), Failure.TRANSIENT),
        (DatabaseError("the server returned an error"), Failure.TRANSIENT),
        (KafkaConnectionError("no broker"), Failure.TRANSIENT),
        (KafkaTimeoutError(), Failure.TRANSIENT),
        (ConnectionRefusedError(111, "refused"), Failure.TRANSIENT),
        (TimeoutError(), Failure.TRANSIENT),
        (DataError("Unable to create native array for column `input_tokens`"), Failure.DATA),
        (DatabaseError("Code: 321. DB::Exception: Value out of range"), Failure.DATA),
        (DatabaseError("Code: 41. DB::Exception: Cannot parse datetime"), Failure.DATA),
        (
            DatabaseError("Code: 60. DB::Exception: Table coalmine.spans does not exist"),
            Failure.BUG,
        ),
        (DatabaseError("Code: 16. DB::Exception: No such column content_hash"), Failure.BUG),
        (ProgrammingError("Insert data column count does not match column names"), Failure.BUG),
        (KeyError("kafka_offset"), Failure.BUG),
        (TypeError("unsupported operand"), Failure.BUG),
    ],
)
def test_failures_are_classified_by_what_a_retry_could_change(
    error: Exception, expected: Failure
) -> None:
    assert classify(error) is expected


def test_the_code_comes_from_the_exception_or_its_message() -> None:
    assert clickhouse_code(DatabaseError("x", code=60)) == 60
    assert clickhouse_code(DatabaseError("Code: 252. DB::Exception: Too many")) == 252
    assert clickhouse_code(DatabaseError("no code here")) is None


def test_one_line_is_the_first_line_bounded() -> None:
    error = DatabaseError("Code: 60. DB::Exception: gone\nStack trace:\n0. frame")
    assert one_line(error) == "DatabaseError: Code: 60. DB::Exception: gone"
    assert len(one_line(ValueError("x" * 1000), limit=50)) == 50
