"""The trace event: one span of an agent's work, as published on ``coalmine.traces``.

Field names follow the OpenTelemetry GenAI semantic conventions where they exist
(``gen_ai.provider.name`` → ``provider``, ``gen_ai.request.model`` → ``model``,
``gen_ai.usage.input_tokens`` → ``input_tokens``, ``gen_ai.usage.cache_read.input_tokens`` →
``cached_input_tokens``, ``gen_ai.usage.reasoning.output_tokens`` → ``reasoning_tokens`` …).
Validation is strict on purpose: whatever passes here is stored for good, so anything
ambiguous is rejected with a reason instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1

MAX_EVENT_BYTES = 64 * 1024
"""Largest accepted message value; bigger ones are rejected before parsing."""
MAX_ERROR_MESSAGE_CHARS = 2048
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 1024

# Control characters (NUL, ESC of terminal escape sequences, newlines), line separators and
# bidirectional overrides: a name holding one prints as something else in a terminal or a log.
UNPRINTABLE = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
PRINTABLE_NOT_BLANK = f"^[^{UNPRINTABLE}]*[^\\s{UNPRINTABLE}][^{UNPRINTABLE}]*$"
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE_NOT_BLANK)
]
"""Agent, version, environment, tenant, provider, model and tool names: printable, not blank."""
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SpanRef = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_.:-]+$")
]
"""Trace and span ids: OpenTelemetry hex ids, or any compact printable id."""
AttributeKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS, pattern=r"^[\w.-]+$")
]
AttributeValue = (
    Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_CHARS)] | bool | int | float
)


class SpanKind(StrEnum):
    REQUEST = "request"
    """The root span of one agent task; request-level metrics come from these."""
    LLM = "llm"
    TOOL = "tool"
    RETRIEVAL = "retrieval"
    GUARDRAIL = "guardrail"
    EVAL = "eval"
    CUSTOM = "custom"


class SpanStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


QUALITY_KINDS = frozenset({SpanKind.REQUEST, SpanKind.EVAL})

APPROVALS_ASKED_ATTRIBUTE: Final = "coalmine.approvals_asked"
"""On a request span: how many of its tool calls its version's policy held for a person's
approval (the SDK sets it; absent means none). The windows add it up per version and the
detector judges the approval rate from it, so it is an integer in [0, MAX_APPROVALS_ASKED]."""
MAX_APPROVALS_ASKED = 10_000


class TraceEvent(BaseModel):
    """One span. ``event_id`` is the idempotency key: a span is stored once however often it
    is delivered.

    A ``coalmine.traces`` message carries one span (this object), or a batch: up to 1000 of
    them, one compact object per line (newline-delimited JSON), 1,000,000 bytes at most, each
    span validated on its own (``schemas/framing.py``)."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        str_max_length=MAX_ATTRIBUTE_VALUE_CHARS,
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID = Field(
        description="Lowercase 8-4-4-4-12 hex form, not the nil UUID: the idempotency key "
        "compares values, so every other spelling of the same id is refused."
    )
    trace_id: SpanRef
    span_id: SpanRef
    parent_span_id: SpanRef | None = None

    agent: Identifier
    version: Identifier
    environment: Identifier = "production"
    tenant: Identifier | None = None

    kind: SpanKind
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE_NOT_BLANK)
    ]

    start_time: AwareDatetime
    end_time: AwareDatetime

    status: SpanStatus = SpanStatus.OK
    error_type: Identifier | None = None
    error_message: Annotated[str, StringConstraints(max_length=MAX_ERROR_MESSAGE_CHARS)] | None = (
        Field(default=None, description="Truncated by the SDK; longer values are rejected.")
    )

    provider: Identifier | None = None
    model: Identifier | None = None
    input_tokens: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    output_tokens: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    # Parts of the two totals, not additions to them, as their OpenTelemetry GenAI
    # counterparts are: providers bill these parts at their own prices.
    cached_input_tokens: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        default=0,
        description="The part of input_tokens served from the provider's prompt cache "
        "(at most input_tokens).",
    )
    reasoning_tokens: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        default=0,
        description="The part of output_tokens spent on reasoning (at most output_tokens).",
    )
    cost_usd: Annotated[float, Field(ge=0, le=1_000_000)] | None = Field(
        default=None, description="Computed from the model price table when absent."
    )
    tool_name: Identifier | None = None

    task_completed: bool | None = Field(default=None, description="Only on request and eval spans.")
    quality_score: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Only on request and eval spans."
    )

    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] = (
        Field(
            default_factory=dict,
            description="Small extra values. One is read by Coalmine: "
            f"`{APPROVALS_ASKED_ATTRIBUTE}` (request spans only, an integer in "
            f"[0, {MAX_APPROVALS_ASKED}]): how many of the request's tool calls waited for a "
            "person's approval.",
        )
    )

    @field_validator("event_id", mode="before")
    @classmethod
    def _canonical_event_id(cls, value: object) -> object:
        if isinstance(value, str) and not _CANONICAL_UUID.fullmatch(value):
            raise ValueError("must be a UUID in lowercase 8-4-4-4-12 hex form")
        if value == "00000000-0000-0000-0000-000000000000":
            raise ValueError("must not be the nil UUID")
        return value

    @field_validator("start_time", "end_time")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _check_consistency(self) -> TraceEvent:
        if self.end_time < self.start_time:
            raise ValueError("end_time is before start_time")
        if self.kind not in QUALITY_KINDS and (
            self.task_completed is not None or self.quality_score is not None
        ):
            raise ValueError("task_completed and quality_score belong on request or eval spans")
        asked = self.attributes.get(APPROVALS_ASKED_ATTRIBUTE)
        if asked is not None and not (
            self.kind is SpanKind.REQUEST
            and type(asked) is int
            and 0 <= asked <= MAX_APPROVALS_ASKED
        ):
            raise ValueError(
                f"attribute {APPROVALS_ASKED_ATTRIBUTE} belongs on request spans, an integer "
                f"in [0, {MAX_APPROVALS_ASKED}]"
            )
        if self.status is SpanStatus.OK and self.error_type is not None:
            raise ValueError("error_type is set but status is ok")
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError(
                f"cached_input_tokens ({self.cached_input_tokens}) exceeds input_tokens "
                f"({self.input_tokens}): cached tokens are counted in input_tokens"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceeds output_tokens "
                f"({self.output_tokens}): reasoning tokens are counted in output_tokens"
            )
        return self

    @property
    def duration_ms(self) -> float:
        return (self.end_time - self.start_time).total_seconds() * 1000.0
