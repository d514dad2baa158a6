"""Decoding, validation, pricing and row mapping of trace events: pure, no I/O."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from schemas.framing import MAX_MESSAGE_BYTES, MAX_SPANS_PER_MESSAGE, split_spans
from schemas.topics import (
    DLQ_ORIGINAL_KEY_BYTES,
    DLQ_ORIGINAL_VALUE_BYTES,
    DLQ_REASON,
    DLQ_SOURCE_INDEX,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    DLQ_TRUNCATED,
)
from schemas.trace import MAX_EVENT_BYTES, TraceEvent
from streams.ingest.pricing import ModelPrice, PriceEntry, PriceTable
from streams.ingest.route import (
    EPOCH,
    InvalidEventError,
    RawMessage,
    Rejection,
    SpanRow,
    TimeBounds,
    content_hash,
    dead_letter,
    dead_letter_headers,
    decode,
    owned_rows,
    route,
    to_row,
)
from streams.storage.clickhouse import SPAN_COLUMNS

START = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
LATEST_END = START + timedelta(minutes=1)
"""What ``route`` accepts as the latest end time (now plus the allowed clock skew)."""
MIXED_CASE_ID = "0e4a3b1c-1111-4222-8333-44445555aaaa"
BOUNDS = TimeBounds(earliest_start=START - timedelta(days=90), latest_end=LATEST_END)
PRICES = PriceTable(
    [
        PriceEntry("openai", "gpt-4o", date(2024, 5, 13), ModelPrice(5.0, 15.0, 5.0, 15.0)),
        PriceEntry("openai", "gpt-4o", date(2024, 10, 2), ModelPrice(2.5, 10.0, 1.25, 10.0)),
    ]
)


def event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=1)),
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "agent": "support-bot",
        "version": "v12",
        "kind": "llm",
        "name": "draft",
        "start_time": START.isoformat(),
        "end_time": (START + timedelta(milliseconds=250)).isoformat(),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    fields.update(overrides)
    return fields


def encoded(**overrides: Any) -> bytes:
    return json.dumps(event(**overrides)).encode()


def reason_for(value: bytes) -> str:
    with pytest.raises(InvalidEventError) as caught:
        decode(value)
    return str(caught.value)


APPROVALS_RULE = (
    "attribute coalmine.approvals_asked belongs on request spans, an integer in [0, 10000]"
)


def test_a_valid_event_decodes() -> None:
    decoded = decode(encoded())
    assert decoded.agent == "support-bot"
    assert decoded.duration_ms == pytest.approx(250.0)
    request = decode(encoded(kind="request", attributes={"coalmine.approvals_asked": 10_000}))
    assert request.attributes == {"coalmine.approvals_asked": 10_000}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"{not json", "Invalid JSON"),
        (encoded(input_tokens=-1), "input_tokens: Input should be greater than or equal to 0"),
        (encoded(input_tokens="12"), "input_tokens: Input should be a valid integer"),
        (encoded(reasoning_tokens=-1), "reasoning_tokens: Input should be greater than or equal"),
        (
            encoded(cached_input_tokens=1001),
            "cached_input_tokens (1001) exceeds input_tokens (1000): cached tokens are counted "
            "in input_tokens",
        ),
        (
            encoded(reasoning_tokens=101),
            "reasoning_tokens (101) exceeds output_tokens (100): reasoning tokens are counted "
            "in output_tokens",
        ),
        (encoded(kind="thought"), "kind: Input should be 'request', 'llm'"),
        (encoded(status="maybe"), "status: Input should be 'ok' or 'error'"),
        (encoded(name="x" * 300), "name: String should have at most 256 characters"),
        (encoded(error_message="e" * 5000), "error_message: String should have at most 2048"),
        (encoded(surprise=1), "surprise: Extra inputs are not permitted"),
        (encoded(end_time=(START - timedelta(seconds=1)).isoformat()), "end_time is before"),
        (encoded(start_time="2026-11-24T12:00:00"), "start_time: Input should have timezone info"),
        (encoded(quality_score=0.5), "belong on request or eval spans"),
        (encoded(kind="request", quality_score=1.5), "quality_score: Input should be less than"),
        (encoded(attributes={f"k{i}": i for i in range(40)}), "attributes: Dictionary should"),
        *(
            (encoded(kind=kind, attributes={"coalmine.approvals_asked": asked}), APPROVALS_RULE)
            for kind, asked in [
                ("llm", 1),  # a request's count, not a span's
                ("request", -1),
                ("request", 10_001),
                ("request", "2"),
                ("request", 2.0),
                ("request", True),
            ]
        ),
        (encoded(cost_usd=float("nan")), "cost_usd: Input should be a finite number"),
        (encoded(cost_usd=float("inf")), "cost_usd: Input should be a finite number"),
        (encoded(cost_usd=1.0).replace(b"1.0", b"1e999"), "cost_usd: Input should be a finite"),
        (encoded(agent="\ud800"), "Invalid JSON: unexpected end of hex escape"),
        (encoded(agent="ok").replace(b"ok", b"\xff"), "Invalid JSON"),
        (b"[]", "Input should be an object"),
        (encoded().replace(b'"agent"', b'"agent": "x", "agent"'), "'agent' appears twice"),
        (
            encoded(attributes={"a": 1}).replace(b'"a": 1', b'"a": 1, "a": 2'),
            "'a' appears twice",
        ),
        (encoded(agent=" \t "), "agent: must show a visible character"),
        (encoded(version="v1\u0000"), "version: must show a visible character"),
        (encoded(agent="bot\u001b[2J"), "agent: must show a visible character"),
        (encoded(name="line\nbreak"), "name: must show a visible character"),
        (encoded(model="gpt\u202e"), "model: must show a visible character"),
        (encoded(event_id=MIXED_CASE_ID.upper()), "event_id: Value error, must be a UUID in"),
        (encoded(event_id=MIXED_CASE_ID.replace("-", "")), "event_id: Value error, must be a"),
        (encoded(event_id="{" + MIXED_CASE_ID + "}"), "must be a UUID in lowercase"),
        (encoded(event_id="urn:uuid:" + MIXED_CASE_ID), "must be a UUID in lowercase"),
        (encoded(event_id=str(uuid.UUID(int=0))), "event_id: Value error, must not be the nil"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(value: bytes, expected: str) -> None:
    assert expected in reason_for(value)


def test_oversized_and_empty_messages_are_rejected_before_parsing() -> None:
    assert "limit is" in reason_for(b" " * (MAX_EVENT_BYTES + 1))
    assert "tombstone" in reason_for(None)  # type: ignore[arg-type]


def test_times_are_normalised_to_utc() -> None:
    decoded = decode(encoded(start_time="2026-11-24T14:00:00+02:00"))
    assert decoded.start_time == START
    assert decoded.start_time.tzinfo == UTC


def test_row_prices_from_the_table_when_cost_is_absent() -> None:
    row = to_row(decode(encoded()), PRICES, 3, 42)._asdict()
    assert row["cost_usd"] == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
    assert row["cost_source"] == "price_table"
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 42)
    assert row["parent_span_id"] == ""
    assert row["task_completed"] is None


def test_row_carries_cached_and_reasoning_tokens_and_prices_them_when_the_event_started() -> None:
    def row_of(start: datetime) -> dict[str, Any]:
        source = encoded(
            start_time=start.isoformat(),
            end_time=(start + timedelta(seconds=1)).isoformat(),
            cached_input_tokens=800,
            reasoning_tokens=40,
        )
        return to_row(decode(source), PRICES, 0, 0)._asdict()

    row = row_of(START)
    assert (row["cached_input_tokens"], row["reasoning_tokens"]) == (800, 40)
    assert row["cost_usd"] == pytest.approx((200 * 2.5 + 800 * 1.25 + 100 * 10.0) / 1e6)
    before_the_cut = row_of(datetime(2024, 10, 1, 23, 59, tzinfo=UTC))
    assert before_the_cut["cost_usd"] == pytest.approx((1000 * 5.0 + 100 * 15.0) / 1e6)
    columns = list(SPAN_COLUMNS)
    assert columns.index("cached_input_tokens") == columns.index("output_tokens") + 1
    assert columns.index("reasoning_tokens") == columns.index("output_tokens") + 2


def test_row_keeps_a_reported_cost_and_flags_unknown_models() -> None:
    reported = to_row(decode(encoded(cost_usd=0.5)), PRICES, 0, 0)._asdict()
    assert (reported["cost_usd"], reported["cost_source"]) == (0.5, "reported")
    unknown = to_row(decode(encoded(model="mystery")), PRICES, 0, 0)._asdict()
    assert (unknown["cost_usd"], unknown["cost_source"]) == (0.0, "unpriced")


def test_row_maps_every_field() -> None:
    source = TraceEvent.model_validate_json(
        encoded(
            kind="request",
            status="error",
            error_type="RateLimitError",
            error_message="slow down",
            tenant="acme",
            parent_span_id="c" * 16,
            task_completed=False,
            quality_score=0.25,
            attributes={"region": "eu", "retries": 2, "cached": True},
        )
    )
    values = to_row(source, PRICES, 1, 7)
    assert len(values) == len(SpanRow._fields)  # built positionally: one value per field
    row = values._asdict()
    assert row["event_id"] == uuid.UUID(int=1)
    assert (row["status"], row["error_type"], row["error_message"]) == (
        "error",
        "RateLimitError",
        "slow down",
    )
    assert (row["tenant"], row["parent_span_id"]) == ("acme", "c" * 16)
    assert (row["task_completed"], row["quality_score"]) == (False, 0.25)
    assert row["attributes"] == {"region": "eu", "retries": "2", "cached": "true"}
    assert row["start_time"] == START


def test_route_keeps_good_events_when_neighbours_are_bad() -> None:
    messages = [
        RawMessage("coalmine.traces", 0, i, b"k", value)
        for i, value in enumerate([encoded(), b"garbage", encoded(event_id=str(uuid.uuid4()))])
    ]
    routed = route(messages, PRICES, BOUNDS)
    assert [row.kafka_offset for row in routed.rows] == [0, 2]
    assert [r.message.offset for r in routed.rejected] == [1]


def test_dead_letter_headers_keep_the_original_and_add_the_source() -> None:
    message = RawMessage("coalmine.traces", 2, 99, b"k", b"v", (("trace", b"1"),))
    (rejection,) = route([message], PRICES, BOUNDS).rejected
    headers = dead_letter_headers(rejection)
    assert headers[0] == ("trace", b"1")
    named = dict(headers[1:])
    assert named[DLQ_SOURCE_TOPIC] == b"coalmine.traces"
    assert named[DLQ_SOURCE_PARTITION] == b"2"
    assert named[DLQ_SOURCE_OFFSET] == b"99"
    assert b"Invalid JSON" in named[DLQ_REASON]


def test_a_span_ending_beyond_the_clock_skew_bound_is_rejected_with_the_distance() -> None:
    on_the_bound = encoded(end_time=LATEST_END.isoformat())
    beyond = encoded(
        event_id=str(uuid.uuid4()), end_time=(LATEST_END + timedelta(seconds=90)).isoformat()
    )
    messages = [
        RawMessage("coalmine.traces", 0, i, b"k", v) for i, v in enumerate([on_the_bound, beyond])
    ]
    routed = route(messages, PRICES, BOUNDS)
    assert [row.kafka_offset for row in routed.rows] == [0]
    (rejection,) = routed.rejected
    assert "90.000s beyond the allowed clock skew" in rejection.reason
    assert "check the producer's clock" in rejection.reason


def test_owned_rows_are_those_whose_message_stored_the_span() -> None:
    messages = [
        RawMessage("coalmine.traces", 3, offset, b"k", encoded(event_id=str(uuid.UUID(int=n))))
        for offset, n in ((10, 1), (11, 2), (12, 1), (13, 3))
    ]
    rows = route(messages, PRICES, BOUNDS).rows
    owners = {
        uuid.UUID(int=1): (3, 10, 0),  # stored by this batch's first message; 12 repeats it
        uuid.UUID(int=2): (3, 11, 0),  # re-delivered after a crash: still its own
        uuid.UUID(int=3): (1, 500, 0),  # a duplicate of a span stored from another message
    }
    kept = owned_rows(rows, owners)
    assert [row.kafka_offset for row in kept] == [10, 11]


def test_names_may_hold_any_printable_text() -> None:
    decoded = decode(encoded(agent="support bot (eu) ✓", name="answer: 日本語"))
    assert (decoded.agent, decoded.name) == ("support bot (eu) ✓", "answer: 日本語")


def test_a_span_older_than_retention_or_the_epoch_is_rejected_at_the_door() -> None:
    bounds = TimeBounds.at(START, timedelta(seconds=30), retention=timedelta(days=7))
    assert bounds.earliest_start == START - timedelta(days=7)
    forever = TimeBounds.at(START, timedelta(seconds=30), retention=None)
    assert forever.earliest_start == EPOCH
    stale = (START - timedelta(days=8)).isoformat()
    ancient = "0001-01-01T00:00:00+00:00"
    values = [encoded(), encoded(start_time=stale), encoded(start_time=ancient)]
    messages = [RawMessage("coalmine.traces", 0, i, None, v) for i, v in enumerate(values)]
    routed = route(messages, PRICES, bounds)
    assert [row.kafka_offset for row in routed.rows] == [0]
    assert [("retention" in r.reason, r.message.offset) for r in routed.rejected] == [
        (True, 1),
        (True, 2),
    ]
    (before_epoch,) = route(messages[2:], PRICES, forever).rejected
    assert "the oldest the tables hold" in before_epoch.reason


def test_a_row_carries_the_hash_of_its_message_bytes() -> None:
    first, reformatted = encoded(), encoded().replace(b", ", b",")
    (row_a,), (row_b,) = (
        route([RawMessage("t", 0, 0, None, v)], PRICES, BOUNDS).rows for v in (first, reformatted)
    )
    assert (
        row_a.content_hash == content_hash(first) != row_b.content_hash == content_hash(reformatted)
    )


def test_a_dead_letter_that_fits_is_the_original_plus_the_reason() -> None:
    message = RawMessage("coalmine.traces", 1, 5, b"key", b"v" * 100, (("origin", b"x"),))
    letter = dead_letter(Rejection(message, "bad"), max_bytes=1000)
    assert (letter.key, letter.value) == (b"key", b"v" * 100)
    assert letter.headers == dead_letter_headers(Rejection(message, "bad"))


@pytest.mark.parametrize(
    ("key", "value", "headers", "cut"),
    [
        (b"k", b"v" * 5000, [("origin", b"x")], b"value"),
        (b"k", b"v" * 5000, [("huge", b"h" * 3000)], b"value,headers"),
        (b"k" * 5000, b"v" * 5000, [("origin", b"x")], b"value,headers,key"),
    ],
)
def test_a_dead_letter_too_large_for_its_topic_is_cut_with_its_original_sizes(
    key: bytes, value: bytes, headers: list[tuple[str, bytes]], cut: bytes
) -> None:
    message = RawMessage("coalmine.traces", 1, 5, key, value, tuple(headers))
    letter = dead_letter(Rejection(message, "message is too large"), max_bytes=2000)
    named = dict(letter.headers)
    assert named[DLQ_TRUNCATED] == cut
    assert named[DLQ_ORIGINAL_VALUE_BYTES] == str(len(value)).encode()
    assert named[DLQ_ORIGINAL_KEY_BYTES] == str(len(key)).encode()
    assert named[DLQ_REASON] == b"message is too large"
    assert named[DLQ_SOURCE_OFFSET] == b"5"
    size = len(letter.key or b"") + len(letter.value or b"")
    size += sum(len(name) + len(data) for name, data in letter.headers)
    assert size <= 2000
    assert (letter.value or b"") == value[: len(letter.value or b"")]
    assert ("origin", b"x") in letter.headers or b"headers" in cut


def batch_message(*spans: bytes, offset: int = 9) -> RawMessage:
    return RawMessage("coalmine.traces", 2, offset, b"key", b"\n".join(spans), (("h", b"1"),))


def test_each_span_of_a_batch_is_routed_alone_and_a_bad_one_dead_lettered_with_its_index() -> None:
    good = [encoded(event_id=str(uuid.UUID(int=n))) for n in (1, 2)]
    bad = encoded(event_id=str(uuid.UUID(int=3)), input_tokens=-1)
    routed = route([batch_message(good[0], bad, good[1])], PRICES, BOUNDS)
    assert [(r.kafka_offset, r.kafka_index) for r in routed.rows] == [(9, 0), (9, 2)]
    assert [r.content_hash for r in routed.rows] == [content_hash(v) for v in good]
    (rejection,) = routed.rejected
    assert (rejection.index, rejection.value) == (1, bad)
    letter = dead_letter(rejection)
    assert (letter.key, letter.value) == (b"key", bad)  # the bad span alone
    headers = dict(letter.headers)
    assert "input_tokens" in headers[DLQ_REASON].decode()
    assert (headers["h"], headers[DLQ_SOURCE_OFFSET], headers[DLQ_SOURCE_INDEX]) == (
        b"1",
        b"9",
        b"1",
    )


def test_a_single_span_is_rejected_whole_without_an_index() -> None:
    (rejection,) = route([batch_message(b"{not json")], PRICES, BOUNDS).rejected
    assert rejection.index is None
    assert DLQ_SOURCE_INDEX not in dict(dead_letter(rejection).headers)


@pytest.mark.parametrize(
    ("value", "spans"),
    [
        (encoded() + b"\n", None),  # a trailing newline: still one span
        (json.dumps(event(), indent=2).encode(), None),  # pretty-printed: one document
        (b" \n\t ", None),
        (encoded() + b"\r\n\r\n" + encoded(span_id="c" * 16), 2),
        (encoded() + b"\n" + b"not json", 2),  # the second line is a bad span
    ],
    ids=["trailing-newline", "pretty-printed", "blank", "crlf-and-blank-lines", "bad-line"],
)
def test_the_framing_rule(value: bytes, spans: int | None) -> None:
    found = split_spans(value)
    assert (None if found is None else len(found)) == spans


def test_a_pretty_printed_span_is_stored_as_before_batches() -> None:
    routed = route([batch_message(json.dumps(event(), indent=2).encode())], PRICES, BOUNDS)
    assert [r.kafka_index for r in routed.rows] == [0] and routed.rejected == []


def test_a_message_over_the_batch_limits_is_rejected_whole() -> None:
    many = batch_message(*[encoded()] * (MAX_SPANS_PER_MESSAGE + 1))
    huge = batch_message(encoded(), b" " * MAX_MESSAGE_BYTES)
    routed = route([many, huge], PRICES, BOUNDS)
    assert routed.rows == []
    reasons = [(r.index, r.reason) for r in routed.rejected]
    assert reasons == [
        (None, f"message holds {MAX_SPANS_PER_MESSAGE + 1} spans; the limit is 1000"),
        (None, f"message is {len(huge.value or b'')} bytes; the limit is {MAX_MESSAGE_BYTES}"),
    ]


def test_two_spans_of_one_message_with_one_event_id_count_once() -> None:
    same = encoded()
    rows = route([batch_message(same, same)], PRICES, BOUNDS).rows
    owners = {rows[0].event_id: (2, 9, 0)}  # the sink stored the first
    assert [r.kafka_index for r in owned_rows(rows, owners)] == [0]


@pytest.mark.parametrize(
    "value",
    [
        b'{"agent" : "x", ' + encoded()[1:],  # blank before a colon: counting cannot tell
        encoded(attributes={"note": 'say \\":'}).replace(b'"agent"', b'"agent": "x", "agent"'),
    ],
    ids=["blank-before-colon", "quote-colon-inside-a-string"],
)
def test_a_duplicate_key_is_found_where_counting_keys_cannot_rule_it_out(value: bytes) -> None:
    with pytest.raises(InvalidEventError, match="'agent' appears twice"):
        decode(value)
