"""OTLP/HTTP bodies in and answers out, and which requests the receiver refuses unread."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from streams.otlp import wire
from streams.otlp.mapping import MappingRules, Rejection
from streams.otlp.receiver import Answer, ReceiverConfig, refusal, summary
from streams.otlp.wire import WireError

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "00f067aa0ba902b7"


def otlp_json(trace_id: str = TRACE_HEX.upper(), **span: Any) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": SPAN_HEX,
                                    "parentSpanId": PARENT_HEX,
                                    "name": "chat",
                                    "kind": 3,
                                    "startTimeUnixNano": "1764000000000000000",
                                    "endTimeUnixNano": 1764000000250000000,
                                    "attributes": [
                                        {"key": "n", "value": {"intValue": "812"}},
                                        {"key": "f", "value": {"doubleValue": 0.5}},
                                        {"key": "b", "value": {"boolValue": True}},
                                        {
                                            "key": "list",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [
                                                        {"stringValue": "stop"},
                                                        {"intValue": 2},
                                                    ]
                                                }
                                            },
                                        },
                                        {"key": "raw", "value": {"bytesValue": "AAE="}},
                                        {"key": "empty", "value": {}},
                                    ],
                                    "events": [
                                        {
                                            "name": "exception",
                                            "attributes": [
                                                {
                                                    "key": "exception.type",
                                                    "value": {"stringValue": "ValueError"},
                                                }
                                            ],
                                        }
                                    ],
                                    "links": [{"traceId": TRACE_HEX, "spanId": PARENT_HEX}],
                                    "status": {"code": 2, "message": "boom"},
                                    **span,
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()


def test_otlp_json_with_hex_ids_reads_like_the_protobuf() -> None:
    request = wire.parse_request(otlp_json(), wire.JSON)
    (span,) = wire.spans_of(request)
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE_HEX, SPAN_HEX, PARENT_HEX)
    assert (span.start_unix_nano, span.end_unix_nano) == (1764000000000000000, 1764000000250000000)
    assert span.attributes == {"n": 812, "f": 0.5, "b": True, "list": '["stop",2]', "raw": "0001"}
    assert span.resource == {"service.name": "bot"}
    assert (span.status_code, span.status_message) == (2, "boom")
    assert span.exception == {"exception.type": "ValueError"}
    link = request.resource_spans[0].scope_spans[0].spans[0].links[0]
    assert link.trace_id.hex() == TRACE_HEX
    binary = wire.parse_request(request.SerializeToString(), wire.PROTOBUF)
    assert wire.spans_of(binary) == [span]


def test_a_root_span_has_no_parent() -> None:
    (span,) = wire.spans_of(wire.parse_request(otlp_json(parentSpanId=""), wire.JSON))
    assert span.parent_span_id is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (otlp_json(trace_id="not hex at all"), "traceId 'not hex at all' is not hex"),
        (otlp_json(trace_id="abc"), "is not hex"),
        (otlp_json(startTimeUnixNano="soon"), "not an OTLP ExportTraceServiceRequest"),
        (b"{", "the body is not JSON"),
        (b"[]", "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
        (otlp_json(name="\ud800"), "Unpaired surrogate"),
    ],
)
def test_bad_json_is_a_400_saying_why(body: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        wire.parse_request(body, wire.JSON)
    assert caught.value.status == 400


def test_unknown_json_fields_are_ignored() -> None:
    body = otlp_json(someFieldFromTheFuture={"x": 1})
    assert len(wire.spans_of(wire.parse_request(body, wire.JSON))) == 1


def test_garbage_protobuf_is_a_400() -> None:
    with pytest.raises(WireError, match="not an OTLP ExportTraceServiceRequest") as caught:
        wire.parse_request(b"\xff\xff\xff\xff", wire.PROTOBUF)
    assert caught.value.status == 400


def test_gzip_within_the_limit_and_the_bomb_beyond_it() -> None:
    assert wire.decompressed(gzip.compress(b"x" * 1000), "gzip", 1000) == b"x" * 1000
    assert wire.decompressed(b"plain", "", 10) == b"plain"
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(WireError, match="inflates to more than 1,000,000 bytes") as caught:
        wire.decompressed(bomb, "GZIP", 1_000_000)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("body", "encoding", "status", "message"),
    [
        (b"\x1f\x8b junk", "gzip", 400, "not valid gzip"),
        (gzip.compress(b"x" * 100)[:-6], "gzip", 400, "truncated"),
        (gzip.compress(b"x") + b"trailing", "gzip", 400, "data follows"),
        (zlib.compress(b"x"), "deflate", 415, "'deflate' is not supported"),
    ],
)
def test_broken_or_unknown_encodings(body: bytes, encoding: str, status: int, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        wire.decompressed(body, encoding, 1000)
    assert caught.value.status == status


def test_answers_are_in_the_requests_encoding() -> None:
    full = wire.export_response(wire.PROTOBUF, 0, "")
    assert not ExportTraceServiceResponse.FromString(full).HasField("partial_success")
    partial = ExportTraceServiceResponse.FromString(wire.export_response(wire.PROTOBUF, 2, "why"))
    assert (partial.partial_success.rejected_spans, partial.partial_success.error_message) == (
        2,
        "why",
    )
    as_json = json.loads(wire.export_response(wire.JSON, 2, "why"))
    assert as_json == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}}
    assert json.loads(wire.export_response(wire.JSON, 0, "")) == {}
    assert Status.FromString(wire.status_response(wire.PROTOBUF, "no")).message == "no"
    assert json.loads(wire.status_response(wire.JSON, "no")) == {"message": "no"}
    # What a JSON answer says parses back as the message it stands for.
    json_format.Parse(wire.export_response(wire.JSON, 1, "x"), ExportTraceServiceResponse())


def test_media_types() -> None:
    assert wire.media_type("application/x-protobuf") == wire.PROTOBUF
    assert wire.media_type("Application/JSON; charset=utf-8") == wire.JSON
    assert wire.media_type("text/plain") is None
    assert wire.media_type("") is None


CONFIG = ReceiverConfig(
    bind_host="127.0.0.1",
    port=4318,
    token="tok",
    max_body_bytes=1000,
    max_concurrent_requests=2,
    delivery_timeout_s=5.0,
    rules=MappingRules(),
)
GOOD = {
    "Host": "127.0.0.1:4318",
    "Authorization": "Bearer tok",
    "Content-Type": "application/x-protobuf",
    "Content-Length": "10",
}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({}, None),
        ({"Host": "localhost:4318"}, None),
        ({"Host": "rebound.example:4318"}, 403),
        ({"Host": "127.0.0.1:80"}, 403),
        ({"Origin": "http://127.0.0.1:4318"}, 403),
        ({"Authorization": "Bearer tok2"}, 401),
        ({"Authorization": "Basic tok"}, 401),
        ({"Authorization": ""}, 401),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Length": "1001"}, 413),
        ({"Content-Length": "-1"}, 413),
    ],
)
def test_refused_before_the_body_is_read(change: dict[str, str], status: int | None) -> None:
    refused = refusal({**GOOD, **change}, CONFIG)
    assert (refused.status if refused else None) == status


def test_without_a_token_or_off_loopback() -> None:
    open_config = ReceiverConfig(**{**CONFIG.__dict__, "token": ""})
    assert refusal({**GOOD, "Authorization": ""}, open_config) is None
    exposed = ReceiverConfig(**{**CONFIG.__dict__, "bind_host": "0.0.0.0"})
    # Reached by name from other machines: the token, not the Host header, keeps others out.
    assert refusal({**GOOD, "Host": "otlp.internal:4318"}, exposed) is None
    assert refusal({**GOOD, "Host": "otlp.internal:4318", "Authorization": ""}, exposed) == (
        Answer(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    )


def test_the_partial_success_message_names_each_reason_once() -> None:
    rejections = [Rejection("t1", f"s{i}", f"reason {i % 7}") for i in range(20)]
    message = summary(rejections)
    assert message.startswith("20 span(s) rejected: reason 0 (e.g. span s0 of trace t1)")
    assert message.count("reason ") == 5 and message.endswith("and 2 other reason(s)")
    assert summary([]) == ""
