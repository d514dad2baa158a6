"""Hostile input on the real broker and chDB: every kind of bad message, each between two valid
neighbours in one partition. The bad one is stored or dead-lettered with its reason, the
neighbours are stored, the worker stays up, and the aggregates still equal the spans."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas.framing import MAX_MESSAGE_BYTES
from schemas.topics import (
    DLQ_ORIGINAL_VALUE_BYTES,
    DLQ_REASON,
    DLQ_SOURCE_INDEX,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_TOPIC,
    DLQ_TRUNCATED,
    TRACES,
    TRACES_DLQ,
)
from schemas.trace import MAX_EVENT_BYTES
from streams.ingest.route import DLQ_MAX_RECORD_BYTES
from streams.settings import Settings
from streams.storage import clickhouse
from tests.integration.harness import consume_all, headers_of, running_worker, wait_for
from tests.integration.test_aggregation import (
    assert_aggregates_match_the_spans,
    windowed_settings,
)

pytestmark = pytest.mark.integration

RETENTION_DAYS = 365
NOW = datetime.now(UTC)


def valid_event(**overrides: Any) -> dict[str, Any]:
    start = NOW - timedelta(seconds=1)
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "trace_id": uuid.uuid4().hex,
        "span_id": uuid.uuid4().hex[:16],
        "agent": "sql-copilot",
        "version": "v3",
        "kind": "request",
        "name": "query",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(milliseconds=40)).isoformat(),
        "quality_score": 0.9,
    }
    fields.update(overrides)
    return fields


def event(**overrides: Any) -> bytes:
    return json.dumps(valid_event(**overrides)).encode()


def without(name: str) -> bytes:
    fields = valid_event()
    del fields[name]
    return json.dumps(fields).encode()


def at(days_ago: float, **overrides: Any) -> bytes:
    start = NOW - timedelta(days=days_ago)
    times = {
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(seconds=1)).isoformat(),
    }
    return event(**times, **overrides)


def replaced(old: bytes, new: bytes, **overrides: Any) -> bytes:
    value = event(**overrides)
    assert old in value
    return value.replace(old, new, 1)


def raw_attributes(text: bytes) -> bytes:
    return replaced(b'"quality_score": 0.9', b'"quality_score": 0.9, "attributes": ' + text)


@dataclass(frozen=True)
class Case:
    value: bytes | None
    reason: str | None
    """A part of the dead-letter reason; ``None``: the message is valid and stored."""
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


SOME_ID = str(uuid.uuid4())
CASES: dict[str, Case] = {
    # malformed JSON
    "truncated object": Case(b'{"event_id": "1", "agent": ', "Invalid JSON"),
    "trailing comma": Case(replaced(b"}", b",}"), "Invalid JSON"),
    "single quotes": Case(b"{'agent': 'a'}", "Invalid JSON"),
    "unquoted key": Case(b'{agent: "a"}', "Invalid JSON"),
    "comment": Case(b'/* hi */ {"agent": "a"}', "Invalid JSON"),
    "trailing garbage": Case(event() + b" trailing", "Invalid JSON"),
    "two objects": Case(event() + event(), "Invalid JSON"),
    "empty value": Case(b"", "Invalid JSON"),
    "tombstone": Case(None, "tombstone"),
    "whitespace only": Case(b" \n\t ", "Invalid JSON"),
    "bare string": Case(b'"span"', "Input should be an object"),
    "bare number": Case(b"42", "Input should be an object"),
    "null": Case(b"null", "Input should be an object"),
    "array": Case(b"[1, 2, 3]", "Input should be an object"),
    "deep nesting": Case(b"[" * 100_000 + b"]" * 100_000, "message is"),
    "deep nesting in a field": Case(
        raw_attributes(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"), "Invalid JSON"
    ),
    "NaN literal": Case(replaced(b"0.9", b"NaN"), "finite number"),
    "Infinity literal": Case(replaced(b"0.9", b"Infinity"), "finite number"),
    "-Infinity literal": Case(replaced(b"0.9", b"-Infinity"), "finite number"),
    "number overflow": Case(replaced(b"0.9", b"1e999"), "finite number"),
    "huge integer": Case(event(input_tokens=10**40), "input_tokens"),
    # encodings
    "invalid UTF-8": Case(replaced(b"sql-copilot", b"sql-\xffcopilot"), "Invalid JSON"),
    "overlong UTF-8": Case(replaced(b"sql-copilot", b"sql-\xc0\xafcopilot"), "Invalid JSON"),
    "lone surrogate escape": Case(replaced(b"sql-copilot", b"sql-\\ud800"), "Invalid JSON"),
    "UTF-16": Case(event().decode().encode("utf-16"), "Invalid JSON"),
    "byte order mark": Case(b"\xef\xbb\xbf" + event(), "Invalid JSON"),
    "raw control character in a string": Case(replaced(b"query", b"qu\x01ery"), "Invalid JSON"),
    "Latin-1 text": Case(replaced(b"sql-copilot", "sql-cöpilot".encode("latin-1")), "Invalid JSON"),
    # sizes
    "oversized message": Case(event(name="n" * (MAX_EVENT_BYTES + 10)), "the limit is"),
    "oversized name": Case(event(name="n" * 300), "name: String should have at most 256"),
    "oversized error message": Case(
        event(status="error", error_message="e" * 5000), "error_message: String should have"
    ),
    "oversized identifier": Case(event(agent="a" * 200), "agent: String should have at most"),
    "too many attributes": Case(event(attributes={f"k{i}": i for i in range(40)}), "attributes"),
    "oversized attribute key": Case(event(attributes={"k" * 100: 1}), "attributes"),
    "oversized attribute value": Case(event(attributes={"k": "v" * 2000}), "attributes"),
    "1.5 MB value (compressed on the wire)": Case(
        b'{"pad": "' + b"a" * 1_500_000 + b'"}', "the limit is"
    ),
    "huge key with a bad value": Case(b"{", "Invalid JSON", key=b"k" * 950_000),
    # types
    "tokens as a string": Case(event(input_tokens="12"), "input_tokens: Input should be a valid"),
    "tokens as a float": Case(event(input_tokens=1.5), "input_tokens"),
    "tokens as a bool": Case(event(input_tokens=True), "input_tokens"),
    "quality as a string": Case(event(quality_score="0.9"), "quality_score"),
    "task outcome as a string": Case(event(task_completed="yes"), "task_completed"),
    "attributes as a list": Case(event(attributes=[1, 2]), "attributes"),
    "nested attribute": Case(event(attributes={"a": {"b": 1}}), "attributes"),
    "attribute value null": Case(event(attributes={"a": None}), "attributes"),
    "time as a number": Case(event(start_time=1764633600), "start_time"),
    "agent as a number": Case(event(agent=7), "agent: Input should be a valid string"),
    "event id as a number": Case(event(event_id=7), "event_id"),
    "kind null": Case(event(kind=None), "kind"),
    # ranges
    "negative tokens": Case(event(input_tokens=-1), "greater than or equal to 0"),
    "too many tokens": Case(event(output_tokens=10**9), "output_tokens"),
    "quality above 1": Case(event(quality_score=1.01), "quality_score"),
    "quality below 0": Case(event(quality_score=-0.1), "quality_score"),
    "negative cost": Case(event(cost_usd=-1.0), "cost_usd"),
    "absurd cost": Case(event(cost_usd=1e7), "cost_usd"),
    "cached above input": Case(event(input_tokens=5, cached_input_tokens=6), "cached_input"),
    "reasoning above output": Case(event(output_tokens=5, reasoning_tokens=6), "reasoning"),
    # times
    "year 1": Case(
        event(start_time="0001-01-01T00:00:00Z", end_time="0001-01-01T00:00:01Z"),
        "is before",
    ),
    "before 1970": Case(
        event(start_time="1969-12-31T23:59:00Z", end_time="1969-12-31T23:59:01Z"),
        "is before",
    ),
    "older than retention": Case(at(RETENTION_DAYS + 5), "retention"),
    "year 9999": Case(event(end_time="9999-12-31T23:59:59Z"), "beyond the allowed clock skew"),
    # A day ahead: the cases are made at import, maybe many minutes before the test runs.
    "beyond the clock skew": Case(
        event(end_time=(NOW + timedelta(days=1)).isoformat()), "beyond the allowed clock skew"
    ),
    "end before start": Case(
        event(end_time=(NOW - timedelta(hours=1)).isoformat()), "end_time is before start_time"
    ),
    "no time zone": Case(event(start_time="2026-12-01T10:00:00"), "timezone"),
    "impossible date": Case(event(start_time="2026-02-30T10:00:00Z"), "start_time"),
    "leap second": Case(event(start_time="2026-06-30T23:59:60Z"), "start_time"),
    # identity
    "nil event id": Case(event(event_id=str(uuid.UUID(int=0))), "nil UUID"),
    "upper-case event id": Case(event(event_id=SOME_ID.upper()), "lowercase 8-4-4-4-12"),
    "event id without hyphens": Case(event(event_id=SOME_ID.replace("-", "")), "lowercase"),
    "event id in braces": Case(event(event_id="{" + SOME_ID + "}"), "lowercase"),
    "event id as a URN": Case(event(event_id="urn:uuid:" + SOME_ID), "lowercase"),
    "trace id with spaces": Case(event(trace_id="a b"), "trace_id"),
    "empty span id": Case(event(span_id=""), "span_id"),
    "schema version 2": Case(event(schema_version=2), "schema_version"),
    "missing agent": Case(without("agent"), "agent: Field required"),
    "missing start time": Case(without("start_time"), "start_time: Field required"),
    # names a terminal would render as something else
    "blank agent": Case(event(agent="   "), "agent: must show a visible character"),
    "NUL in agent": Case(event(agent="bot\u0000"), "agent: must show a visible character"),
    "terminal escape in version": Case(event(version="v3\u001b[2J"), "version: must show"),
    "newline in agent": Case(event(agent="bot\nEVIL"), "agent: must show a visible character"),
    "bidi override in model": Case(
        event(kind="llm", quality_score=None, model="gpt\u202e"), "model: must show"
    ),
    "tab-only environment": Case(event(environment="\t"), "environment: must show"),
    "empty name": Case(event(name=""), "name: String should have at least 1"),
    # schema
    "unknown field": Case(event(surprise=1), "surprise: Extra inputs are not permitted"),
    "unknown kind": Case(event(kind="daydream"), "kind: Input should be"),
    "unknown status": Case(event(status="maybe"), "status: Input should be 'ok' or 'error'"),
    "duplicate key": Case(replaced(b'"agent"', b'"agent": "other", "agent"'), "appears twice"),
    "duplicate attribute key": Case(raw_attributes(b'{"a": 1, "a": 2}'), "appears twice"),
    "quality on an llm span": Case(event(kind="llm"), "belong on request or eval spans"),
    "error type on an ok span": Case(event(error_type="Timeout"), "error_type is set"),
    "approvals asked as text": Case(
        event(attributes={"coalmine.approvals_asked": "999999"}),
        "coalmine.approvals_asked belongs on request spans, an integer",
    ),
    # Kafka framing the pipeline must take in its stride (valid values: stored)
    "many headers": Case(event(), None, headers=[(f"h{i}", b"x" * 100) for i in range(200)]),
    "binary key": Case(event(), None, key=bytes(range(256))),
    "header with an empty value": Case(event(), None, headers=[("empty", b"")]),
}


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return replace(windowed_settings(kafka_settings, tmp_path), spans_ttl_days=RETENTION_DAYS)


def test_no_message_stalls_or_crashes_the_pipeline(settings: Settings, tmp_path: Path) -> None:
    assert len(CASES) >= 60
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "compression.type": "lz4",  # lets the 1.5 MB value onto the topic
            "message.max.bytes": 4_000_000,
            "linger.ms": 50,
        }
    )
    topic = settings.topic(TRACES)
    neighbours: list[str] = []

    def produce_valid(value: bytes | None = None) -> None:
        value = value or event()
        neighbours.append(json.loads(value)["event_id"])
        producer.produce(topic, value, key=b"valid", partition=0)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        produce_valid()
        for name, case in CASES.items():
            key = case.key or f"bad-{name}".encode()
            headers: list[tuple[str, str | bytes | None]] = list(case.headers)
            producer.produce(topic, case.value, key=key, headers=headers, partition=0)
            produce_valid()
        # Valid spans over 150 days, in one batch: more days than one insert may touch.
        for days_ago in range(150):
            produce_valid(at(days_ago + 0.5))
        # The exact same message twice is a re-delivery; the same id with other bytes is not.
        original = event()
        producer.produce(topic, original, key=b"bad-exact duplicate", partition=0)
        producer.produce(topic, original, key=b"bad-exact duplicate", partition=0)
        conflict = json.dumps({**json.loads(original), "name": "other"}).encode()
        producer.produce(topic, conflict, key=b"bad-conflicting duplicate", partition=0)
        assert producer.flush(30) == 0
        produce_with_kcat(settings, topic, event(), header_key=b"bad\xffkey")
        produce_valid()
        assert producer.flush(30) == 0

        valid_cases = [name for name, case in CASES.items() if case.reason is None]
        # + the valid cases, the duplicated original and the one kcat sent
        expected_spans = len(neighbours) + len(valid_cases) + 2
        stored = wait_for(worker, "SELECT count() FROM coalmine.spans", expected_spans)
        ids = {row[0] for row in worker.sql("SELECT toString(event_id) FROM coalmine.spans")}
        let_in = [name for name, case in CASES.items() if case.reason and event_id(case) in ids]
        assert not let_in, let_in
        assert stored == expected_spans, worker.log_tail()
        assert set(neighbours) <= ids
        assert json.loads(original)["event_id"] in ids
        assert worker.scalar("SELECT uniqExact(event_id) FROM coalmine.spans") == expected_spans
        assert (
            worker.scalar(
                "SELECT name FROM coalmine.spans WHERE event_id = "
                f"toUUID('{json.loads(original)['event_id']}')"
            )
            == json.loads(original)["name"]
        )

        assert_every_bad_message_was_dead_lettered(settings)

        health = worker.health()
        assert health["status"] == "ok", health
        requests = worker.scalar("SELECT countIf(kind = 'request') FROM coalmine.spans")
        counted = "SELECT toUInt64(sum(requests)) FROM coalmine.version_stats"
        assert wait_for(worker, counted, requests, timeout_s=60) == requests
        assert_aggregates_match_the_spans(worker)
        assert worker.stop() == 0, worker.log_tail()


def batchable(case: Case) -> bool:
    """A case that can be one line of a batch: a value with no newline that is not blank,
    sent without a key or headers of its own, small enough for a batch."""
    value = case.value
    return (
        value is not None
        and b"\n" not in value
        and bool(value.strip(b" \t\r"))
        and case.key is None
        and not case.headers
        and len(value) <= 2 * MAX_EVENT_BYTES
    )


def test_each_bad_span_of_a_batch_is_dead_lettered_alone_and_its_neighbours_land(
    settings: Settings, tmp_path: Path
) -> None:
    """Every case that fits on a line, as spans of one batch between valid spans: each bad
    span is dead-lettered alone (its own bytes, its index, the batch's key and headers),
    every other span is stored, and the aggregates still equal the spans."""
    cases = {name: case for name, case in CASES.items() if batchable(case)}
    assert len(cases) >= 60
    neighbours = [event()]
    lines = [neighbours[0]]
    index_of: dict[int, str] = {}
    for name, case in cases.items():
        index_of[len(lines)] = name
        lines.append(case.value or b"")
        neighbours.append(event())
        lines.append(neighbours[-1])
    value = b"\n".join(lines)
    assert len(value) <= MAX_MESSAGE_BYTES
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    headers: list[tuple[str, str | bytes | None]] = [("origin", b"batch-test")]
    producer.produce(settings.topic(TRACES), value, key=b"the-batch", headers=headers)
    assert producer.flush(30) == 0

    valid = [name for name, case in cases.items() if case.reason is None]
    bad = {name for name, case in cases.items() if case.reason is not None}
    with running_worker(settings, tmp_path / "worker.log") as worker:
        expected = len(neighbours) + len(valid)
        assert wait_for(worker, "SELECT count() FROM coalmine.spans", expected) == expected
        ids = {row[0] for row in worker.sql("SELECT toString(event_id) FROM coalmine.spans")}
        assert {json.loads(n)["event_id"] for n in neighbours} <= ids
        dead = consume_all(settings.kafka_bootstrap, settings.topic(TRACES_DLQ), len(bad), 120)
        by_name = {index_of[int(headers_of(m)[DLQ_SOURCE_INDEX])]: m for m in dead}
        assert by_name.keys() == bad
        for name in bad:
            letter = by_name[name]
            assert (letter.key(), letter.value()) == (b"the-batch", cases[name].value)
            assert headers_of(letter)["origin"] == b"batch-test"
            assert_dead_letter(letter, cases[name], settings)
        assert worker.health()["status"] == "ok"
        requests = worker.scalar("SELECT countIf(kind = 'request') FROM coalmine.spans")
        counted = "SELECT toUInt64(sum(requests)) FROM coalmine.version_stats"
        assert wait_for(worker, counted, requests, timeout_s=60) == requests
        assert_aggregates_match_the_spans(worker)
        assert worker.stop() == 0, worker.log_tail()


def assert_every_bad_message_was_dead_lettered(settings: Settings) -> None:
    dead_expected = {name for name, case in CASES.items() if case.reason is not None}
    dead_expected.add("conflicting duplicate")
    dead = consume_all(
        settings.kafka_bootstrap, settings.topic(TRACES_DLQ), len(dead_expected), 120
    )
    by_name = {bytes(m.key() or b"").decode(errors="replace")[4:]: m for m in dead}
    by_name.pop(bytes(CASES["huge key with a bad value"].key or b"").decode()[4:], None)
    missing = dead_expected - by_name.keys() - {"huge key with a bad value"}
    assert not missing, missing
    for name in dead_expected - {"huge key with a bad value", "conflicting duplicate"}:
        assert_dead_letter(by_name[name], CASES[name], settings)
    conflict_reason = headers_of(by_name["conflicting duplicate"])[DLQ_REASON]
    assert b"already stored from another span" in conflict_reason
    huge_key = [m for m in dead if len(m.key() or b"") > 100_000]
    assert len(huge_key) == 1 and b"Invalid JSON" in headers_of(huge_key[0])[DLQ_REASON]
    assert headers_of(huge_key[0])[DLQ_TRUNCATED] == b"value,headers,key"
    big = headers_of(by_name["1.5 MB value (compressed on the wire)"])
    assert big[DLQ_TRUNCATED] == b"value"
    assert int(big[DLQ_ORIGINAL_VALUE_BYTES]) > 1_500_000


def event_id(case: Case) -> str | None:
    try:
        return str(json.loads(case.value or b"")["event_id"])
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


def assert_dead_letter(message: Any, case: Case, settings: Settings) -> None:
    headers = headers_of(message)
    reason = headers[DLQ_REASON].decode()
    assert case.reason is not None and case.reason in reason, (case, reason)
    assert headers[DLQ_SOURCE_TOPIC] == settings.topic(TRACES).encode()
    assert int(headers[DLQ_SOURCE_OFFSET]) >= 0
    if DLQ_TRUNCATED in headers:
        assert len(message.value() or b"") + len(message.key() or b"") <= DLQ_MAX_RECORD_BYTES
        assert (case.value or b"").startswith(message.value() or b"")
    else:
        assert message.value() == case.value
        for name, value in case.headers:
            assert headers[name] == value


def produce_with_kcat(settings: Settings, topic: str, value: bytes, header_key: bytes) -> None:
    """kcat, a client this project did not write, sends a header key that is not UTF-8 (the
    Python clients refuse to)."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is needed (apt-get install kcat; `make test` installs it)"
    arguments = [kcat, "-P", "-b", settings.kafka_bootstrap, "-t", topic, "-p", "0"]
    subprocess.run(
        [*map(str.encode, arguments), b"-k", b"bad-header", b"-H", header_key + b"=v"],
        input=value,
        check=True,
        timeout=30,
    )


def test_a_write_no_retry_can_mend_stops_the_worker_and_keeps_the_batch(
    settings: Settings, tmp_path: Path
) -> None:
    """A broken schema is a bug, not bad input: the worker stops with the cause and a non-zero
    exit instead of retrying for ever, and the batch stays unacknowledged for the next start."""
    client = clickhouse.connect(settings)
    clickhouse.migrate(client)
    client.command("ALTER TABLE coalmine.spans DROP COLUMN content_hash")
    client.close()
    log = tmp_path / "worker.log"
    value = event()
    with running_worker(settings, log) as worker:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(settings.topic(TRACES), value)
        assert producer.flush(30) == 0
        assert worker.wait_exit(timeout_s=60) == 1
    assert "ClickHouse insert failed and retrying cannot help (bug)" in log.read_text()
    assert "content_hash" in log.read_text()

    client = clickhouse.connect(settings)
    client.command(
        "ALTER TABLE coalmine.spans ADD COLUMN content_hash UInt64 CODEC(ZSTD(1)) AFTER attributes"
    )
    client.close()
    with running_worker(settings, log) as worker:
        assert wait_for(worker, "SELECT count() FROM coalmine.spans", 1) == 1
        stored = worker.scalar("SELECT toString(event_id) FROM coalmine.spans")
        assert stored == json.loads(value)["event_id"]
