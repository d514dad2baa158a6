"""OpenTelemetry spans → Coalmine trace events: pure, table-driven, no I/O.

A span becomes one :class:`~schemas.trace.TraceEvent` or a rejection with a reason; nothing
is dropped silently. The tables below are the whole mapping (README "OpenTelemetry in" lists
them for users): the GenAI semantic conventions of both attribute generations
(``gen_ai.provider.name`` and the older ``gen_ai.system``, ``gen_ai.usage.input_tokens`` and
the older ``gen_ai.usage.prompt_tokens`` ...), OpenInference's names (``llm.*``,
``openinference.span.kind``) and Coalmine's own ``coalmine.*`` attributes for what no
convention names (task outcome, quality score, tenant).

``event_id`` is a UUID derived from the trace and span ids, so an exporter that sends the same
span again (a retry after a lost answer) produces the same event, byte for byte, and the
worker stores it once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import ValidationError

from schemas.trace import (
    MAX_ATTRIBUTE_KEY_CHARS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_EVENT_BYTES,
    SpanKind,
    SpanStatus,
    TraceEvent,
)
from streams.ingest.route import describe_validation_error

AttributeValue = str | bool | int | float
"""An OTLP attribute value as the mapping sees it; arrays and maps arrive as JSON text."""

EVENT_ID_NAMESPACE: Final = uuid.UUID("db4bb9f4-28ab-4b48-b76d-9a75a1b95890")
"""uuid5 namespace of event ids derived from OpenTelemetry trace and span ids."""
_NAMESPACE_BYTES: Final = EVENT_ID_NAMESPACE.bytes

# --- the tables ---------------------------------------------------------------------------

OPERATION_KINDS: Final[Mapping[str, SpanKind]] = {
    "invoke_agent": SpanKind.REQUEST,
    "chat": SpanKind.LLM,
    "text_completion": SpanKind.LLM,
    "generate_content": SpanKind.LLM,
    "embeddings": SpanKind.LLM,
    "execute_tool": SpanKind.TOOL,
    "retrieval": SpanKind.RETRIEVAL,
}
"""``gen_ai.operation.name`` → kind; any other operation (create_agent, plan, memory
operations ...) is ``custom``."""

OPENINFERENCE_KINDS: Final[Mapping[str, SpanKind]] = {
    "AGENT": SpanKind.REQUEST,
    "LLM": SpanKind.LLM,
    "EMBEDDING": SpanKind.LLM,
    "TOOL": SpanKind.TOOL,
    "RETRIEVER": SpanKind.RETRIEVAL,
    "RERANKER": SpanKind.RETRIEVAL,
    "GUARDRAIL": SpanKind.GUARDRAIL,
    "EVALUATOR": SpanKind.EVAL,
    "CHAIN": SpanKind.CUSTOM,
    "PROMPT": SpanKind.CUSTOM,
}
"""``openinference.span.kind`` → kind, used when a span has no ``gen_ai.operation.name``."""

OPERATION = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"
ERROR_TYPE = "error.type"

# Each field from the first of its attributes the span has, newest convention first.
PROVIDER_KEYS: Final = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
MODEL_KEYS: Final = (
    "gen_ai.request.model",
    "llm.request.model_name",
    "llm.model_name",
    "gen_ai.response.model",
    "llm.response.model_name",
    "embedding.model_name",
    "reranker.model_name",
)
INPUT_TOKEN_KEYS: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKEN_KEYS: Final = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHED_INPUT_TOKEN_KEYS: Final = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
REASONING_TOKEN_KEYS: Final = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
)
TOOL_NAME_KEYS: Final = ("gen_ai.tool.name", "tool.name")
COST_KEYS: Final = ("coalmine.cost_usd", "llm.cost.total")
QUALITY_SCORE = "coalmine.quality_score"
TASK_COMPLETED = "coalmine.task_completed"
TENANT = "coalmine.tenant"
ENVIRONMENT_KEYS: Final = (
    "coalmine.environment",
    "deployment.environment.name",
    "deployment.environment",
)

PROVIDER_ALIASES: Final[Mapping[str, str]] = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
}
"""Provider names of the conventions → the price table's (streams/data/prices.json)."""

CONTENT_PREFIXES: Final = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "gen_ai.retrieval.documents",
    "gen_ai.retrieval.query.text",
    "gen_ai.memory.",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "llm.choices",
    "llm.tools",
    "llm.prompt_template",
    "llm.invocation_parameters",
    "llm.function_call",
    "input.value",
    "output.value",
    "retrieval.documents",
    "reranker.input_documents",
    "reranker.output_documents",
    "reranker.query",
    "embedding.embeddings",
    "tool.parameters",
    "tool.json_schema",
)
"""Prompts, completions, tool arguments and results, documents: never kept as attributes
(personal data, and far larger than an attribute may be)."""

CONSUMED_KEYS: Final = frozenset(
    {
        *PROVIDER_KEYS,
        *INPUT_TOKEN_KEYS,
        *OUTPUT_TOKEN_KEYS,
        *CACHED_INPUT_TOKEN_KEYS,
        *REASONING_TOKEN_KEYS,
        *TOOL_NAME_KEYS,
        *COST_KEYS,
        *ENVIRONMENT_KEYS,
        QUALITY_SCORE,
        TASK_COMPLETED,
        TENANT,
        ERROR_TYPE,
    }
)
"""Span attributes that became fields; the attributes map does not repeat them."""

DROPPED_ATTRIBUTES = "coalmine.otlp.dropped_attributes"
"""Set on an event to how many of the span's other attributes did not fit its bounds."""
ATTRIBUTES_BUDGET_CHARS = 16 * 1024
"""Kept attributes' JSON at most this long: with the longest name and error message, an
event stays far below :data:`~schemas.trace.MAX_EVENT_BYTES`."""
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_UNKNOWN_SERVICE = "unknown_service"
"""What OpenTelemetry SDKs report as ``service.name`` when none is configured."""
_MAX_NAME_CHARS = 256
_MAX_IDENTIFIER_CHARS = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_ERROR = 2
"""``Status.code`` STATUS_CODE_ERROR of the OTLP protobuf."""


# --- input and output ---------------------------------------------------------------------


@dataclass(frozen=True)
class OtelSpan:
    """One OTLP span with what the mapping reads, independent of the wire format: ids as
    lowercase hex, attributes as scalars, and its resource's attributes."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_unix_nano: int
    end_unix_nano: int
    attributes: Mapping[str, AttributeValue]
    resource: Mapping[str, AttributeValue]
    status_code: int = 0
    status_message: str = ""
    exception: Mapping[str, AttributeValue] | None = None
    """Attributes of the span's first ``exception`` event, if it has one."""


@dataclass(frozen=True)
class MappingRules:
    """Where agent and version come from: the first of these attributes found on the span,
    then on its ancestors in the same request (nearest first), then on its resource."""

    agent_keys: tuple[str, ...] = ("gen_ai.agent.name", "service.name")
    version_keys: tuple[str, ...] = ("gen_ai.agent.version", "service.version")


@dataclass(frozen=True)
class Rejection:
    trace_id: str
    span_id: str
    reason: str


@dataclass
class MappedSpans:
    """What became of a request's spans: every span is an event or a rejection."""

    events: list[TraceEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


class SpanRejectedError(ValueError):
    """A span that cannot become a trace event; the text says why."""


# --- the mapping --------------------------------------------------------------------------


def event_id_of(trace_id: str, span_id: str) -> uuid.UUID:
    """The same span (trace id + span id) always gets the same event id: ``uuid5`` of the
    ids, computed as :func:`uuid.uuid5` does, without its per-call overhead (a third of it)."""
    name = f"{trace_id.lower()}/{span_id.lower()}".encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def map_spans(spans: Sequence[OtelSpan], rules: MappingRules) -> MappedSpans:
    """Map every span of one export request; each event once (a span sent twice in one
    request is one event)."""
    by_id = {(span.trace_id, span.span_id): span for span in spans}
    mapped = MappedSpans()
    seen: dict[uuid.UUID, TraceEvent] = {}
    for span in spans:
        try:
            event = map_span(span, rules, _ancestors(span, by_id))
        except SpanRejectedError as exc:
            mapped.rejections.append(Rejection(span.trace_id, span.span_id, str(exc)))
            continue
        earlier = seen.setdefault(event.event_id, event)
        if earlier is event:
            mapped.events.append(event)
        elif earlier != event:  # the same span again is one event; another span is a conflict
            mapped.rejections.append(
                Rejection(
                    span.trace_id,
                    span.span_id,
                    "this span id is in the request twice, with other content",
                )
            )
    return mapped


def _ancestors(span: OtelSpan, by_id: Mapping[tuple[str, str], OtelSpan]) -> list[OtelSpan]:
    """The span's parent, grandparent ... as far as the request holds them (cycles cut)."""
    found: list[OtelSpan] = []
    seen = {span.span_id}
    parent = span.parent_span_id
    while parent is not None and parent not in seen:
        ancestor = by_id.get((span.trace_id, parent))
        if ancestor is None:
            break
        found.append(ancestor)
        seen.add(parent)
        parent = ancestor.parent_span_id
    return found


def map_span(span: OtelSpan, rules: MappingRules, ancestors: Sequence[OtelSpan] = ()) -> TraceEvent:
    """The trace event of ``span``, or :class:`SpanRejectedError` saying why there is none."""
    _check_ids(span)
    if span.start_unix_nano <= 0:
        raise SpanRejectedError("the span has no start time")
    attrs = span.attributes
    levels = (attrs, *(ancestor.attributes for ancestor in ancestors), span.resource)
    kind = span_kind(span)
    failed = span.status_code == _STATUS_ERROR or ERROR_TYPE in attrs
    exception = span.exception or {}
    provider = _text(attrs, PROVIDER_KEYS)
    fields = {
        "event_id": event_id_of(span.trace_id, span.span_id),
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "agent": _identity(levels, rules.agent_keys, "agent"),
        "version": _identity(levels, rules.version_keys, "version"),
        "environment": _text(attrs, ENVIRONMENT_KEYS)
        or _text(span.resource, ENVIRONMENT_KEYS)
        or "production",
        "tenant": _text(attrs, (TENANT,)) or _text(span.resource, (TENANT,)),
        "kind": kind,
        "name": _cut(span.name, _MAX_NAME_CHARS),
        "start_time": _time(span.start_unix_nano),
        "end_time": _time(span.end_unix_nano),
        "status": SpanStatus.ERROR if failed else SpanStatus.OK,
        "error_type": _cut_or_none(
            (_text(attrs, (ERROR_TYPE,)) or _text(exception, ("exception.type",)))
            if failed
            else None,
            _MAX_IDENTIFIER_CHARS,
        ),
        "error_message": _cut_or_none(
            (span.status_message or _text(exception, ("exception.message",))) if failed else None,
            MAX_ERROR_MESSAGE_CHARS,
        ),
        "provider": None if provider is None else PROVIDER_ALIASES.get(provider, provider),
        "model": _text(attrs, MODEL_KEYS),
        "input_tokens": _count(attrs, INPUT_TOKEN_KEYS),
        "output_tokens": _count(attrs, OUTPUT_TOKEN_KEYS),
        "cached_input_tokens": _count(attrs, CACHED_INPUT_TOKEN_KEYS),
        "reasoning_tokens": _count(attrs, REASONING_TOKEN_KEYS),
        "cost_usd": _number(attrs, COST_KEYS),
        "tool_name": _text(attrs, TOOL_NAME_KEYS),
        "task_completed": _flag(attrs, TASK_COMPLETED),
        "quality_score": _number(attrs, (QUALITY_SCORE,)),
        "attributes": kept_attributes(attrs, {*rules.agent_keys, *rules.version_keys}),
    }
    try:
        event = TraceEvent.model_validate(fields)
        size = len(event.model_dump_json().encode())
    except ValidationError as exc:
        raise SpanRejectedError(describe_validation_error(exc)) from None
    except Exception as exc:  # a string that is not valid Unicode (a lone surrogate)
        raise SpanRejectedError(f"the span cannot be written as JSON: {exc}") from None
    if size > MAX_EVENT_BYTES:  # cannot happen within the budgets above; never publish it
        raise SpanRejectedError(f"the event would be {size} bytes (limit {MAX_EVENT_BYTES})")
    return event


def span_kind(span: OtelSpan) -> SpanKind:
    """The root span of a trace, and an agent invocation, is a ``request``; otherwise the
    operation (GenAI conventions, then OpenInference) decides, and ``custom`` by default."""
    operation = span.attributes.get(OPERATION)
    if isinstance(operation, str) and operation in OPERATION_KINDS:
        kind = OPERATION_KINDS[operation]
    elif operation is None:
        oi_kind = span.attributes.get(OPENINFERENCE_KIND)
        kind = (
            OPENINFERENCE_KINDS.get(oi_kind, SpanKind.CUSTOM)
            if isinstance(oi_kind, str)
            else (SpanKind.CUSTOM)
        )
    else:
        kind = SpanKind.CUSTOM
    return SpanKind.REQUEST if span.parent_span_id is None else kind


def kept_attributes(
    attrs: Mapping[str, AttributeValue], identity_keys: Iterable[str] = ()
) -> dict[str, AttributeValue]:
    """The span's other attributes, within the event's bounds: no field repeated, no
    content (prompts, completions ...), keys and values the schema accepts, at most
    :data:`MAX_ATTRIBUTES` and :data:`ATTRIBUTES_BUDGET_CHARS`; long strings are cut. How many
    did not fit is recorded as :data:`DROPPED_ATTRIBUTES`."""
    skip = CONSUMED_KEYS | set(identity_keys)
    kept: dict[str, AttributeValue] = {}
    dropped = 0
    budget = ATTRIBUTES_BUDGET_CHARS
    for key, value in attrs.items():
        if key in skip or key.startswith(CONTENT_PREFIXES):
            continue
        fitting = _fitting_value(value)
        cost = len(key) + len(json.dumps(fitting)) + 4 if fitting is not None else 0
        if (
            fitting is None
            or len(key) > MAX_ATTRIBUTE_KEY_CHARS
            or not _ATTRIBUTE_KEY.fullmatch(key)
            or len(kept) >= MAX_ATTRIBUTES - 1
            or cost > budget
        ):
            dropped += 1
            continue
        kept[key] = fitting
        budget -= cost
    if dropped:
        kept[DROPPED_ATTRIBUTES] = dropped
    return kept


def _fitting_value(value: AttributeValue) -> AttributeValue | None:
    if isinstance(value, str):
        return _cut(value, MAX_ATTRIBUTE_VALUE_CHARS)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_ids(span: OtelSpan) -> None:
    if len(span.trace_id) != 32 or span.trace_id == "0" * 32:
        raise SpanRejectedError("trace_id must be 16 bytes, not all zero")
    if len(span.span_id) != 16 or span.span_id == "0" * 16:
        raise SpanRejectedError("span_id must be 8 bytes, not all zero")
    if span.parent_span_id is not None and len(span.parent_span_id) != 16:
        raise SpanRejectedError("parent_span_id must be 8 bytes or empty")


def _identity(
    levels: Sequence[Mapping[str, AttributeValue]], keys: Sequence[str], what: str
) -> str:
    """The first of ``keys`` found, each looked up on every level (span, ancestors, resource)
    before the next key."""
    for key in keys:
        for attrs in levels:
            value = attrs.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, str | int):
                continue
            text = str(value)
            if key == "service.name" and (
                text == _UNKNOWN_SERVICE or text.startswith(f"{_UNKNOWN_SERVICE}:")
            ):
                continue
            return text
    raise SpanRejectedError(
        f"no {what}: the span, its ancestors in this request and its resource have none of "
        f"{', '.join(keys)} (set them, e.g. the resource's service.name and service.version)"
    )


def _first(attrs: Mapping[str, AttributeValue], keys: Sequence[str]) -> tuple[str, object]:
    for key in keys:
        if key in attrs:
            return key, attrs[key]
    return "", None


def _text(attrs: Mapping[str, AttributeValue], keys: Sequence[str]) -> str | None:
    key, value = _first(attrs, keys)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpanRejectedError(f"{key} must be a string, not {_show(value)}")
    return value


def _count(attrs: Mapping[str, AttributeValue], keys: Sequence[str]) -> int:
    key, value = _first(attrs, keys)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpanRejectedError(f"{key} must be a whole number, not {_show(value)}")
    return value


def _number(attrs: Mapping[str, AttributeValue], keys: Sequence[str]) -> float | None:
    key, value = _first(attrs, keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpanRejectedError(f"{key} must be a number, not {_show(value)}")
    return float(value)


def _flag(attrs: Mapping[str, AttributeValue], key: str) -> bool | None:
    value = attrs.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise SpanRejectedError(f"{key} must be a boolean, not {_show(value)}")


def _time(unix_nano: int) -> datetime:
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_or_none(text: str | None, limit: int) -> str | None:
    return None if text is None else _cut(text, limit)


def _show(value: object) -> str:
    return _cut(repr(value), 60)
