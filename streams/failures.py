"""What a failed write means: wait and retry, blame the rows, or stop.

The ingest path writes to Kafka (dead letters, window rows) and ClickHouse (spans, window
rows). A failure is one of three things, and each has one right answer:

* ``TRANSIENT``: the broker or ClickHouse is unreachable, slow, full, or busy merging. The
  same write can succeed later, so it is retried with backoff for as long as the worker runs.
* ``DATA``: ClickHouse refused these particular rows (a value out of a column's range, one
  it cannot parse or serialize). Retrying cannot help; the rows at fault are isolated and
  dead-lettered, the others stored.
* ``BUG``: anything else (a missing table or column, a Python error in our own code). Retrying
  would stall ingestion for good, so the worker stops with the error and a non-zero exit,
  leaving the batch unacknowledged for the next start.
"""

from __future__ import annotations

import re
from enum import Enum

from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)


class Failure(Enum):
    TRANSIENT = "transient"
    DATA = "data"
    BUG = "bug"


# ClickHouse error codes (src/Common/ErrorCodes.cpp) that are about the values inserted.
DATA_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        407,  # DECIMAL_OVERFLOW
    }
)
# Codes that mean the schema or a query of ours is wrong: no retry makes them succeed.
BUG_CODES = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        60,  # UNKNOWN_TABLE
        62,  # SYNTAX_ERROR
        81,  # UNKNOWN_DATABASE
    }
)
_CODE = re.compile(r"\bCode: (\d+)\.")


def clickhouse_code(exc: BaseException) -> int | None:
    """The server's error code, from the exception or its message (chDB sets no attribute)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, DataError):  # raised by the client while serializing a value
        return Failure.DATA
    if isinstance(exc, OperationalError):  # connection and transport
        return Failure.TRANSIENT
    if isinstance(exc, DatabaseError):
        code = clickhouse_code(exc)
        if code in DATA_CODES:
            return Failure.DATA
        if code in BUG_CODES or (code is None and isinstance(exc, ProgrammingError)):
            return Failure.BUG
        # Disk full or read-only, memory, timeouts, too many parts, network: all pass.
        return Failure.TRANSIENT
    if isinstance(exc, KafkaError | OSError | TimeoutError):
        return Failure.TRANSIENT
    return Failure.BUG


_NOISE = re.compile(r"(: In scope .*|\s*\(version [^)]*\)\.?)", re.DOTALL)
MAX_MESSAGE_CHARS = 500


def clickhouse_message(message: str) -> str:
    """ClickHouse's error in one line, without the echo of the query and version trailer."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = _NOISE.sub("", lines[0] if lines else message)
    return first if len(first) <= MAX_MESSAGE_CHARS else first[: MAX_MESSAGE_CHARS - 1] + "…"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The error's type and first line, bounded: ClickHouse messages run to pages."""
    text = f"{type(exc).__name__}: {clickhouse_message(str(exc))}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
