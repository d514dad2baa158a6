"""The :class:`Tracer`: turns units of agent work into :class:`~schemas.trace.TraceEvent`
spans and hands them to a :class:`~streams.sdk.publisher.Publisher`.

Two promises shape everything here:

* **The agent's own code path is never hurt.** Nothing in this module raises into the code
  being traced or blocks it: a span that fails validation is dropped and counted, a full send
  queue drops the event and counts it, broker trouble is counted and logged (rate-limited).
  The only exceptions that leave a ``with`` block are the user's own, unchanged.
* **Nothing is lost silently.** Every event is either delivered, or counted as failed
  (the broker never acknowledged it), dropped (never queued) or invalid (never built).

Usage::

    publisher = KafkaPublisher.from_settings(SdkSettings.from_env())
    tracer = Tracer("support-bot", "v12", publisher)
    with tracer.request("answer-question", tenant="acme") as req:
        with req.llm("draft", provider="openai", model="gpt-4o-mini") as llm:
            llm.set_usage(input_tokens=812, output_tokens=96)
        with req.tool("search", tool_name="web_search"):
            ...
        req.set_outcome(task_completed=True, quality_score=0.8)
    publisher.close()

With a :class:`~streams.sdk.router.Router`, each request runs the version the agent's
deployment gives its routing key, and every span of the request carries that version::

    tracer = Tracer("support-bot", "v12", publisher, router=Router(settings))
    with tracer.request("answer-question", route_key=user_id) as req:
        prompt = req.bundle.prompts["system"] if req.bundle else DEFAULT_PROMPT
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID, uuid4

from pydantic import ValidationError

from schemas.trace import (
    APPROVALS_ASKED_ATTRIBUTE,
    MAX_ATTRIBUTE_KEY_CHARS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ERROR_MESSAGE_CHARS,
    SpanKind,
    SpanStatus,
    TraceEvent,
)
from schemas.version import AgentBundle
from streams.logs import RateLimitedLog
from streams.sdk.approvals import Approvals
from streams.sdk.publisher import Publisher
from streams.sdk.router import Route, RoutingTable
from streams.sdk.toolcall import ask_if_needed

logger = logging.getLogger("coalmine.sdk")

MAX_ERROR_TYPE_CHARS = 128
"""The schema's bound on ``error_type`` (an identifier)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not replace the user's exception with ours
        return f"<unprintable {type(exc).__name__}>"


class Span:
    """One unit of work. Use it as a context manager (timed by the tracer's clock) or call
    :meth:`end` yourself; with explicit ``start_time``/``end_time`` it records work whose
    times are already known (imports, simulations). The event is built and published when
    the span ends (one never ended is never published); ending twice is a no-op."""

    def __init__(
        self,
        tracer: Tracer,
        kind: SpanKind,
        name: str,
        *,
        trace_id: str,
        parent_span_id: str | None,
        tenant: str | None,
        start_time: datetime | None,
        version: str,
        provider: str | None = None,
        model: str | None = None,
        tool_name: str | None = None,
    ) -> None:
        self._tracer = tracer
        self.kind = kind
        self.name = name
        self.trace_id = trace_id
        self.span_id = tracer.new_span_id()
        self.parent_span_id = parent_span_id
        self.tenant = tenant
        self.version = version
        """The agent version the span's request runs (every span of a request has it)."""
        self.start_time = tracer.now() if start_time is None else start_time
        self._fields: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "tool_name": tool_name,
        }
        self._attributes: dict[str, str | bool | int | float] = {}
        self._ended = False

    # -- children --

    def span(self, kind: SpanKind | str, name: str, *, start_time: datetime | None = None) -> Span:
        """A child span of any kind but ``request`` (one per trace: the root). Eval spans
        that carry a quality score come from :meth:`eval`."""
        kind = SpanKind(kind)  # a misspelt kind fails here, at the call, not as a lost span
        if kind is SpanKind.REQUEST:
            raise ValueError("a request span is a root; use tracer.request() for it")
        if kind is SpanKind.EVAL:
            return self.eval(name, start_time=start_time)
        return self._child(Span, kind, name, start_time)

    def llm(
        self, name: str, *, provider: str, model: str, start_time: datetime | None = None
    ) -> Span:
        return self._child(Span, SpanKind.LLM, name, start_time, provider=provider, model=model)

    def tool(
        self, name: str, *, tool_name: str | None = None, start_time: datetime | None = None
    ) -> Span:
        return self._child(Span, SpanKind.TOOL, name, start_time, tool_name=tool_name or name)

    def retrieval(self, name: str, *, start_time: datetime | None = None) -> Span:
        return self._child(Span, SpanKind.RETRIEVAL, name, start_time)

    def guardrail(self, name: str, *, start_time: datetime | None = None) -> Span:
        return self._child(Span, SpanKind.GUARDRAIL, name, start_time)

    def eval(self, name: str, *, start_time: datetime | None = None) -> OutcomeSpan:
        """An evaluation of the request (e.g. an LLM judge); it can carry a quality score."""
        return self._child(OutcomeSpan, SpanKind.EVAL, name, start_time)

    def _child(
        self,
        cls: type[_S],
        kind: SpanKind,
        name: str,
        start_time: datetime | None,
        **fields: str | None,
    ) -> _S:
        return cls(
            self._tracer,
            kind,
            name,
            trace_id=self.trace_id,
            parent_span_id=self.span_id,
            tenant=self.tenant,
            start_time=start_time,
            version=self.version,
            **fields,
        )

    # -- data --

    def set_usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Token counts and, when known, the cost; without a cost the pipeline prices the
        span from its model price table.

        ``cached_input_tokens`` (served from the provider's prompt cache) are part of
        ``input_tokens`` and ``reasoning_tokens`` part of ``output_tokens``, as providers
        report them; a part larger than its total makes the span invalid.
        """
        if input_tokens is not None:
            self._fields["input_tokens"] = _as_int(input_tokens)
        if output_tokens is not None:
            self._fields["output_tokens"] = _as_int(output_tokens)
        if cached_input_tokens is not None:
            self._fields["cached_input_tokens"] = _as_int(cached_input_tokens)
        if reasoning_tokens is not None:
            self._fields["reasoning_tokens"] = _as_int(reasoning_tokens)
        if cost_usd is not None:
            self._fields["cost_usd"] = cost_usd

    def set_model(self, *, provider: str | None = None, model: str | None = None) -> None:
        """Correct the provider/model once known (e.g. the model a response reports)."""
        if provider is not None:
            self._fields["provider"] = provider
        if model is not None:
            self._fields["model"] = model

    def set_error(self, error_type: str, message: str | None = None) -> None:
        """Mark the span failed without an exception (e.g. a tool returned an error)."""
        self._fields["status"] = SpanStatus.ERROR
        self._fields["error_type"] = _truncate(error_type, MAX_ERROR_TYPE_CHARS)
        self._fields["error_message"] = (
            None if message is None else _truncate(message, MAX_ERROR_MESSAGE_CHARS)
        )

    def set_attribute(self, key: str, value: str | bool | int | float) -> None:
        """A small extra value. Long strings are truncated; a bad key, a non-finite number,
        another type, or one attribute too many is dropped alone (counted and logged) so the
        span itself survives."""
        problem = _attribute_problem(key, value)
        if (
            problem is None
            and key not in self._attributes
            and len(self._attributes) >= (MAX_ATTRIBUTES)
        ):
            problem = f"more than {MAX_ATTRIBUTES} attributes"
        if problem is not None:
            self._tracer._attribute_dropped(self.name, key, problem)
            return
        if isinstance(value, str):
            value = _truncate(value, MAX_ATTRIBUTE_VALUE_CHARS)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
            value = int(value)  # numpy integers: the strict schema takes only real ints
        self._attributes[key] = value

    # -- ending --

    def end(self, *, end_time: datetime | None = None) -> None:
        """Finish the span (at ``end_time``, default now) and publish it."""
        if self._ended:
            return
        self._ended = True
        if end_time is None:
            # A wall clock stepping backwards must not produce end < start (an invalid span).
            end_time = max(self._tracer.now(), self.start_time)
        self._tracer._emit(self._event_fields(end_time))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # GeneratorExit is a generator being closed, not the work failing.
        if exc is not None and not isinstance(exc, GeneratorExit):
            self.set_error(type(exc).__name__, _describe(exc))
        self.end()
        # Returning None lets the user's exception propagate unchanged.

    def _event_fields(self, end_time: datetime) -> dict[str, Any]:
        fields = {k: v for k, v in self._fields.items() if v is not None}
        return {
            "event_id": self._tracer.new_event_id(),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "tenant": self.tenant,
            "version": self.version,
            "kind": self.kind,
            "name": self.name,
            "start_time": self.start_time,
            "end_time": end_time,
            "attributes": dict(self._attributes),
            **fields,
        }


_S = TypeVar("_S", bound=Span)
_T = TypeVar("_T")


class OutcomeSpan(Span):
    """A span that can carry the task outcome: the request (root) span and eval spans."""

    def set_outcome(
        self, *, task_completed: bool | None = None, quality_score: float | None = None
    ) -> None:
        """Whether the task was completed and its quality in [0, 1]. A value the schema
        rejects drops this span (counted in ``tracer.invalid_spans``), never raises."""
        if task_completed is not None:
            self._fields["task_completed"] = task_completed
        if quality_score is not None:
            self._fields["quality_score"] = quality_score


class RequestSpan(OutcomeSpan):
    """The root span of one agent task, with the version that serves it: ``route`` (from the
    tracer's router, or the tracer's own version without one) says which version, and hands
    over what the agent must act with (``bundle``: prompts, model, tools)."""

    def __init__(self, tracer: Tracer, name: str, route: Route, **kwargs: Any) -> None:
        super().__init__(tracer, SpanKind.REQUEST, name, version=route.version, **kwargs)
        self.route = route
        self._approvals_asked = 0

    def note_approval_asked(self) -> None:
        """One more of this request's tool calls held for a person's approval. The request
        span carries the count (attribute ``coalmine.approvals_asked``): the detector judges
        a canary that asks people more often than stable."""
        self._approvals_asked += 1
        self.set_attribute(APPROVALS_ASKED_ATTRIBUTE, self._approvals_asked)

    @property
    def bundle(self) -> AgentBundle | None:
        """The version's prompts, model and tools; None when no router has read them."""
        return self.route.bundle

    @property
    def generation(self) -> int | None:
        """The deployment state's generation that chose the version; None without one."""
        return self.route.generation

    @property
    def environment(self) -> str:
        return self._tracer.environment

    def call_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        run: Callable[..., _T],
        *,
        requested_by: str | None = None,
    ) -> _T:
        """``run(**arguments)`` in a tool span, once the version's approval policy for
        ``tool`` lets it: at once when the policy does not ask, else when a person approves
        (this thread waits; see :class:`~streams.sdk.approvals.Approvals`). Raises
        :class:`~streams.sdk.approvals.ApprovalDeniedError`, ``ApprovalTimeoutError`` or
        ``ApprovalUnavailableError`` (all ``ApprovalError``) instead of running it."""
        asked = ask_if_needed(self, self._tracer.approvals, tool, arguments, requested_by)
        if asked is not None:
            asked.finish(asked.approvals.wait(asked.pending))
        with self.tool(tool):
            return run(**arguments)

    async def acall_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        run: Callable[..., Awaitable[_T]],
        *,
        requested_by: str | None = None,
    ) -> _T:
        """:meth:`call_tool` for ``async`` code: the wait holds no thread, and ``run`` is a
        coroutine function."""
        asked = ask_if_needed(self, self._tracer.approvals, tool, arguments, requested_by)
        if asked is not None:
            asked.finish(await asked.approvals.wait_async(asked.pending))
        with self.tool(tool):
            return await run(**arguments)


def _as_int(value: int) -> int:
    # numpy integers are Integral but not int, and the schema is strict; floats are left
    # alone so that 12.5 tokens is reported as invalid rather than silently rounded.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


_ATTRIBUTE_KEY = re.compile(r"[\w.-]+")  # the schema's pattern


def _attribute_problem(key: str, value: object) -> str | None:
    if len(key) > MAX_ATTRIBUTE_KEY_CHARS or not _ATTRIBUTE_KEY.fullmatch(key):
        return "invalid key (letters, digits, _ . - only; at most 64 characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if not isinstance(value, str | bool | numbers.Integral | float):
        return f"unsupported type {type(value).__name__}"
    return None


class Tracer:
    """Makes spans for one agent and publishes them.

    Every request runs one version of the agent: ``version`` when there is no ``router``, else
    the one the router picks for the request's routing key (``version`` being the fallback
    while the agent has no deployment, see :class:`~streams.sdk.router.RoutingTable`).
    ``bundle`` is the version's content when there is no router (its tools' approval
    policies); ``approvals`` asks people when a policy holds a tool call back
    (:meth:`RequestSpan.call_tool`).

    ``clock`` returns aware UTC datetimes and ``id_factory`` returns UUIDs; inject both for
    deterministic tests and simulations. Thread-safe: spans of different requests can be
    recorded from different threads.
    """

    def __init__(
        self,
        agent: str,
        version: str,
        publisher: Publisher,
        *,
        router: RoutingTable | None = None,
        bundle: AgentBundle | None = None,
        approvals: Approvals | None = None,
        environment: str = "production",
        clock: Callable[[], datetime] = _utc_now,
        id_factory: Callable[[], UUID] = uuid4,
    ) -> None:
        self.agent = agent
        self.version = version
        self.router = router
        self.bundle = bundle
        self.approvals = approvals
        self.environment = environment
        self.publisher = publisher
        self._clock = clock
        self._id_factory = id_factory
        self._lock = threading.Lock()
        self._invalid_spans = 0
        self._dropped_attributes = 0
        self._publish_errors = 0
        self._warn_invalid = RateLimitedLog(logger, logging.WARNING)
        self._warn_attribute = RateLimitedLog(logger, logging.WARNING)
        self._warn_publish = RateLimitedLog(logger, logging.ERROR)

    def request(
        self,
        name: str,
        *,
        tenant: str | None = None,
        start_time: datetime | None = None,
        trace_id: str | None = None,
        route_key: str | None = None,
    ) -> RequestSpan:
        """The root span of one agent task; ``trace_id`` continues an existing trace.

        With a router, ``route_key`` (a user or session id) picks the version, the same one for
        the same key while the deployment stays; without a key each request is drawn alone
        (its trace id is the key). Read the choice from ``req.version`` / ``req.bundle``."""
        trace_id = trace_id or self.new_trace_id()
        if self.router is None:
            route = Route(self.agent, self.version, None, self.bundle, None)
        else:
            route = self.router.route(self.agent, route_key or trace_id, self.version)
        return RequestSpan(
            self,
            name,
            route,
            trace_id=trace_id,
            parent_span_id=None,
            tenant=tenant,
            start_time=start_time,
        )

    def record(self, event: TraceEvent) -> None:
        """Publish an already-built event as is (it was validated when it was built)."""
        self._publish(event)

    @property
    def invalid_spans(self) -> int:
        """Spans dropped because the schema rejected their values."""
        return self._invalid_spans

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    @property
    def publish_errors(self) -> int:
        """Spans lost because the publisher raised (a well-behaved one never does)."""
        return self._publish_errors

    def now(self) -> datetime:
        return self._clock()

    def new_event_id(self) -> UUID:
        return self._id_factory()

    def new_trace_id(self) -> str:
        """32 hex digits, as OpenTelemetry trace ids."""
        return self._id_factory().hex

    def new_span_id(self) -> str:
        """16 hex digits, as OpenTelemetry span ids."""
        value = self._id_factory().int
        # Folding the halves together: a UUID4's fixed version and variant bits sit at
        # different positions in each half, so every bit of the result is random.
        return f"{(value ^ (value >> 64)) & 0xFFFF_FFFF_FFFF_FFFF:016x}"

    def _emit(self, fields: dict[str, Any]) -> None:
        try:
            event = TraceEvent(agent=self.agent, environment=self.environment, **fields)
        except ValidationError as exc:
            with self._lock:
                self._invalid_spans += 1
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'span'}: {e['msg']}" for e in exc.errors()
            )
            self._warn_invalid(
                "span %r of %s %s dropped, invalid: %s",
                fields.get("name"),
                self.agent,
                fields.get("version"),
                problems,
            )
            return
        self._publish(event)

    def _publish(self, event: TraceEvent) -> None:
        try:
            self.publisher.publish(event)
        except Exception as exc:
            with self._lock:
                self._publish_errors += 1
            self._warn_publish("publisher raised, span lost: %s: %s", type(exc).__name__, exc)

    def _attribute_dropped(self, span_name: str, key: str, problem: str) -> None:
        with self._lock:
            self._dropped_attributes += 1
        self._warn_attribute("attribute %r of span %r dropped: %s", key, span_name, problem)
