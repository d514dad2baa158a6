"""How spans travel in a ``coalmine.traces`` message: one JSON object, or a batch of them one
per line (newline-delimited JSON). Both sides use this module: the SDK joins, ingest splits.

**Why newline-delimited and not a JSON array.** Each span of a batch is a contiguous run of
the message's bytes. So a span is validated exactly as a message of one span always was
(every rule of :class:`~schemas.trace.TraceEvent`, the same parser), its content hash is the
hash of its own bytes, and a bad span is dead-lettered as the bytes it arrived as; a broken
span (a syntax error, a cut) spoils only its own line, where in an array it makes the whole
message unreadable. Splitting is a scan for newline bytes, with no parse before the real one.
A compact JSON object has no newline, so a message of one span is unchanged: what kcat and
every producer sent before batches keeps working, and so does a pretty-printed object.

**The rule.** A value is a batch when it holds more than one non-blank line and its first
non-blank line is a whole JSON object (starts with ``{`` and ends with ``}``, JSON whitespace
aside); each non-blank line is then one span, numbered from 0 in order (its *index*). Any
other value is one JSON document: one span, as before batches. A message holds at most
:data:`MAX_MESSAGE_BYTES` bytes and :data:`MAX_SPANS_PER_MESSAGE` spans, each span at most
:data:`~schemas.trace.MAX_EVENT_BYTES`.

Standard library only: the SDK imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

MAX_MESSAGE_BYTES: Final = 1_000_000
"""Largest message value: the Kafka producer's default ``message.max.bytes``."""
MAX_SPANS_PER_MESSAGE: Final = 1000
SEPARATOR: Final = b"\n"
_JSON_BLANKS: Final = b" \t\r"  # JSON whitespace besides the separator


def split_spans(value: bytes) -> list[bytes] | None:
    """The spans of a batch, in order, or ``None`` when ``value`` is one JSON document (one
    span, or input to reject whole)."""
    if SEPARATOR not in value:
        return None
    lines = [line for line in value.split(SEPARATOR) if line.strip(_JSON_BLANKS)]
    if len(lines) < 2:
        return None
    first = lines[0].strip(_JSON_BLANKS)
    if not (first.startswith(b"{") and first.endswith(b"}")):
        return None  # one document over several lines: a pretty-printed object
    return lines


def join_spans(spans: Sequence[bytes]) -> bytes:
    """A message value carrying ``spans`` (each a compact JSON object: no newline inside)."""
    return SEPARATOR.join(spans)
