"""OTLP/HTTP on the wire: bodies in (gzip, binary protobuf or OTLP/JSON) and answers out.

Pure functions over bytes. OTLP/JSON is protobuf's JSON mapping with one deviation that the
protobuf library does not know: trace and span ids are hex, not base64. They are turned into
base64 before the library parses the document, so both encodings go through one decoder.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from streams.otlp.mapping import AttributeValue, OtelSpan

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
MEDIA_TYPES: Final = (PROTOBUF, JSON)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId")


class WireError(ValueError):
    """A request that cannot be read; ``status`` is the HTTP answer (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def media_type(content_type: str) -> str | None:
    """``application/x-protobuf`` or ``application/json`` of a Content-Type header, else None."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    return media if media in MEDIA_TYPES else None


def decompressed(body: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its gzip, refused (413) once it would pass ``limit`` bytes: a small
    body that inflates to gigabytes (a gzip bomb) is stopped after ``limit`` of them."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise WireError(415, f"Content-Encoding {encoding!r} is not supported (gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
        while inflater.unconsumed_tail and len(data) <= limit:
            data += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(data))
    except zlib.error as exc:
        raise WireError(400, f"the body is not valid gzip: {exc}") from None
    if len(data) > limit:
        raise WireError(413, f"the body inflates to more than {limit:,} bytes")
    if not inflater.eof:
        raise WireError(400, "the gzip body is truncated")
    if inflater.unused_data:
        raise WireError(400, "data follows the end of the gzip body")
    return data


def parse_request(body: bytes, media: str) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from binary protobuf or OTLP/JSON, or a 400."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise WireError(
                400, f"the body is not an OTLP ExportTraceServiceRequest: {exc}"
            ) from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WireError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise WireError(400, 'the body must be a JSON object: {"resourceSpans": [...]}')
    _hex_ids_to_base64(document)
    try:
        # OTLP/JSON receivers must ignore fields they do not know (newer senders add some).
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError) as exc:
        raise WireError(400, f"the JSON is not an OTLP ExportTraceServiceRequest: {exc}") from None
    return request


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    for resource_spans in _objects(document.get("resourceSpans")):
        for scope_spans in _objects(resource_spans.get("scopeSpans")):
            for span in _objects(scope_spans.get("spans")):
                _convert_ids(span)
                for link in _objects(span.get("links")):
                    _convert_ids(link)


def _objects(value: object) -> Iterable[dict[str, Any]]:
    """The objects of a JSON list; anything else is left for the parser to refuse."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else ()


def _convert_ids(message: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        value = message.get(name)
        if isinstance(value, str):
            if not _HEX.fullmatch(value):
                raise WireError(400, f"{name} {value[:40]!r} is not hex (OTLP/JSON ids are hex)")
            message[name] = base64.b64encode(bytes.fromhex(value)).decode()


def spans_of(request: ExportTraceServiceRequest) -> list[OtelSpan]:
    """Every span of the request with its resource's attributes."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                exception = next((e for e in span.events if e.name == "exception"), None)
                spans.append(
                    OtelSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        start_unix_nano=span.start_time_unix_nano,
                        end_unix_nano=span.end_time_unix_nano,
                        attributes=attributes_of(span.attributes),
                        resource=resource,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        exception=None
                        if exception is None
                        else attributes_of(exception.attributes),
                    )
                )
    return spans


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    """Scalars as they are; arrays and maps as compact JSON text, bytes as hex; empty values
    left out."""
    attributes: dict[str, AttributeValue] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        if kind is None:
            continue
        value = _python(pair.value)
        attributes[pair.key] = (
            json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            if isinstance(value, list | dict)
            else value
        )
    return attributes


def _python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _python(pair.value) for pair in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None if kind is None else getattr(value, kind)


# --- answers ------------------------------------------------------------------------------


def export_response(media: str, rejected: int, message: str) -> bytes:
    """The answer to an export: full success, or partial success naming what was rejected."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return _encode(response, media)


def status_response(media: str, message: str) -> bytes:
    """A failure's body: a ``google.rpc.Status`` whose message says what went wrong (OTLP
    leaves ``code`` unused)."""
    return _encode(Status(message=message), media)


def _encode(message: ExportTraceServiceResponse | Status, media: str) -> bytes:
    if media == JSON:
        document: Mapping[str, Any] = json_format.MessageToDict(message)
        return json.dumps(document, separators=(",", ":")).encode()
    return message.SerializeToString()
