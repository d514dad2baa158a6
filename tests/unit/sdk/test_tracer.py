"""The tracer's span building, driven through an in-memory publisher (no I/O)."""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from schemas.trace import (
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ERROR_MESSAGE_CHARS,
    SpanKind,
    SpanStatus,
    TraceEvent,
)
from streams.devtools.control_records import example_version, rollout_state
from streams.sdk import OutcomeSpan, Publisher, RoutingTable, Tracer
from streams.sdk.compacted import Record

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class ListPublisher:
    """The in-memory transport: keeps every published event, in order."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.closed = False

    def publish(self, event: TraceEvent) -> None:
        self.events.append(event)

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> None:
        self.closed = True

    def by_name(self, name: str) -> TraceEvent:
        (event,) = [e for e in self.events if e.name == name]
        return event


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += timedelta(milliseconds=ms)


def counting_ids() -> Iterator[UUID]:
    for n in itertools.count(1):
        yield UUID(int=n * 0x1_0000_0000_0001_0000_0000_0001)


@pytest.fixture
def publisher() -> ListPublisher:
    return ListPublisher()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracer(publisher: ListPublisher, clock: FakeClock) -> Tracer:
    ids = counting_ids()
    return Tracer("support-bot", "v12", publisher, clock=clock, id_factory=lambda: next(ids))


def test_list_publisher_satisfies_the_protocol(publisher: ListPublisher) -> None:
    typed: Publisher = publisher
    assert typed is publisher


def test_spans_are_timed_by_the_injected_clock(
    tracer: Tracer, publisher: ListPublisher, clock: FakeClock
) -> None:
    with tracer.request("answer-question") as req:
        clock.advance(5)
        with req.llm("draft", provider="openai", model="gpt-4o-mini") as llm:
            clock.advance(120)
            llm.set_usage(input_tokens=812, output_tokens=96)
        clock.advance(3)

    llm_event, request_event = publisher.events  # children end first
    assert llm_event.start_time == T0 + timedelta(milliseconds=5)
    assert llm_event.duration_ms == pytest.approx(120)
    assert (llm_event.input_tokens, llm_event.output_tokens) == (812, 96)
    assert (llm_event.provider, llm_event.model) == ("openai", "gpt-4o-mini")
    assert llm_event.cost_usd is None  # priced by the pipeline
    assert request_event.start_time == T0
    assert request_event.duration_ms == pytest.approx(128)
    assert request_event.kind is SpanKind.REQUEST
    assert (request_event.agent, request_event.version) == ("support-bot", "v12")


def test_a_clock_stepping_back_never_makes_an_invalid_span(
    tracer: Tracer, publisher: ListPublisher, clock: FakeClock
) -> None:
    with tracer.request("r"):
        clock.advance(-1000)
    (event,) = publisher.events
    assert event.end_time == event.start_time
    assert tracer.invalid_spans == 0


def test_nested_spans_share_the_trace_and_link_to_their_parent(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("answer-question", tenant="acme") as req:
        with (
            req.tool("search", tool_name="web_search") as tool,
            tool.llm("rerank", provider="anthropic", model="claude-haiku-4-5"),
        ):
            pass
        with req.retrieval("kb"):
            pass
        with req.guardrail("pii"):
            pass
        with req.span(SpanKind.CUSTOM, "post-process"):
            pass

    root = publisher.by_name("answer-question")
    tool_event = publisher.by_name("search")
    assert root.parent_span_id is None
    assert re.fullmatch("[0-9a-f]{32}", root.trace_id)
    assert {e.trace_id for e in publisher.events} == {root.trace_id}
    assert {e.tenant for e in publisher.events} == {"acme"}
    assert publisher.by_name("rerank").parent_span_id == tool_event.span_id
    for name in ("search", "kb", "pii", "post-process"):
        assert publisher.by_name(name).parent_span_id == root.span_id
    assert tool_event.tool_name == "web_search"
    assert [e.kind for e in publisher.events] == [
        SpanKind.LLM,
        SpanKind.TOOL,
        SpanKind.RETRIEVAL,
        SpanKind.GUARDRAIL,
        SpanKind.CUSTOM,
        SpanKind.REQUEST,
    ]
    span_ids = [e.span_id for e in publisher.events]
    assert all(re.fullmatch("[0-9a-f]{16}", s) for s in span_ids)
    assert len(set(span_ids)) == len(span_ids)
    assert len({e.event_id for e in publisher.events}) == len(publisher.events)


def test_each_request_starts_a_new_trace_unless_one_is_given(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("a"):
        pass
    with tracer.request("b"):
        pass
    with tracer.request("c", trace_id="0af7651916cd43dd8448eb211c80319c"):
        pass
    a, b, c = publisher.events
    assert a.trace_id != b.trace_id
    assert c.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_an_escaping_exception_marks_every_enclosing_span_and_is_reraised(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    class ToolTimeoutError(Exception):
        pass

    error = ToolTimeoutError("search took longer than 30 s")
    with pytest.raises(ToolTimeoutError) as raised, tracer.request("r") as req, req.tool("search"):
        raise error
    assert raised.value is error  # the user's own exception, unchanged

    for event in publisher.events:
        assert event.status is SpanStatus.ERROR
        assert event.error_type == "ToolTimeoutError"
        assert event.error_message == "search took longer than 30 s"


def test_a_handled_exception_leaves_the_outer_span_ok(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r") as req:
        try:
            with req.tool("search"):
                raise TimeoutError
        except TimeoutError:
            pass
    tool_event, root = publisher.events
    assert (tool_event.status, tool_event.error_type, tool_event.error_message) == (
        SpanStatus.ERROR,
        "TimeoutError",
        "",
    )
    assert (root.status, root.error_type) == (SpanStatus.OK, None)


def test_long_error_messages_are_truncated_to_the_schema_bound(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with pytest.raises(RuntimeError), tracer.request("r"):
        raise RuntimeError("x" * 10_000)
    (event,) = publisher.events
    assert event.error_message is not None
    assert len(event.error_message) == MAX_ERROR_MESSAGE_CHARS
    assert event.error_message.endswith("…")


def test_an_unprintable_exception_is_still_recorded_and_reraised(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    class WeirdError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(WeirdError), tracer.request("r"):
        raise WeirdError
    assert publisher.events[0].error_message == "<unprintable WeirdError>"


def test_set_error_marks_a_span_failed_without_an_exception(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r") as req, req.tool("sql") as tool:
        tool.set_error("ToolExecutionError", "syntax error at or near FROM")
    tool_event, root = publisher.events
    assert tool_event.status is SpanStatus.ERROR
    assert tool_event.error_type == "ToolExecutionError"
    assert root.status is SpanStatus.OK


def test_invalid_values_drop_only_that_span_and_are_counted(
    tracer: Tracer, publisher: ListPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="coalmine.sdk"), tracer.request("r") as req:
        with req.llm("draft", provider="openai", model="gpt-4o") as llm:
            llm.set_usage(input_tokens=-5)  # negative: the llm span is invalid
        with req.tool("search"):
            pass
        req.set_outcome(task_completed=True, quality_score=1.5)  # out of [0, 1]

    assert [e.name for e in publisher.events] == ["search"]
    assert tracer.invalid_spans == 2
    # The reason is logged, and the second warning within the interval is held back.
    assert "input_tokens: Input should be greater than or equal to 0" in caplog.text
    assert len(caplog.records) == 1


def test_cached_and_reasoning_tokens_travel_as_parts_of_the_totals(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r") as req, req.llm("think", provider="openai", model="o3") as llm:
        llm.set_usage(
            input_tokens=1200, output_tokens=300, cached_input_tokens=1024, reasoning_tokens=256
        )
    llm_event, root = publisher.events
    assert (llm_event.input_tokens, llm_event.cached_input_tokens) == (1200, 1024)
    assert (llm_event.output_tokens, llm_event.reasoning_tokens) == (300, 256)
    assert (root.cached_input_tokens, root.reasoning_tokens) == (0, 0)


def test_a_part_larger_than_its_total_drops_the_span_with_the_reason(
    tracer: Tracer, publisher: ListPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="coalmine.sdk"),
        tracer.request("r") as req,
        req.llm("draft", provider="openai", model="gpt-4o") as llm,
    ):
        llm.set_usage(input_tokens=10, cached_input_tokens=11)
    assert [e.name for e in publisher.events] == ["r"]
    assert tracer.invalid_spans == 1
    assert "cached_input_tokens (11) exceeds input_tokens (10)" in caplog.text


def test_outcome_fields_are_only_on_the_request_span(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r") as req:
        with req.llm("draft", provider="openai", model="gpt-4o"):
            pass
        with req.eval("judge") as judge:
            judge.set_outcome(quality_score=0.6)
        req.set_outcome(task_completed=True, quality_score=0.8)
    llm_event, judge_event, root = publisher.events
    assert (llm_event.task_completed, llm_event.quality_score) == (None, None)
    assert (judge_event.kind, judge_event.quality_score) == (SpanKind.EVAL, 0.6)
    assert (root.task_completed, root.quality_score) == (True, 0.8)
    assert not hasattr(llm_event, "set_outcome")


def test_a_nested_request_span_or_an_unknown_kind_is_refused_at_the_call(tracer: Tracer) -> None:
    with tracer.request("r") as req:
        with pytest.raises(ValueError, match="root"):
            req.span(SpanKind.REQUEST, "inner")
        with pytest.raises(ValueError, match="'lmm' is not a valid SpanKind"):
            req.span("lmm", "typo")


def test_generic_spans_take_kind_names(tracer: Tracer, publisher: ListPublisher) -> None:
    with tracer.request("r") as req:
        with req.span("guardrail", "pii"):
            pass
        with req.span(SpanKind.EVAL, "judge") as judge:
            assert isinstance(judge, OutcomeSpan)
    assert [e.kind for e in publisher.events] == [
        SpanKind.GUARDRAIL,
        SpanKind.EVAL,
        SpanKind.REQUEST,
    ]


def test_attributes_are_kept_and_bad_ones_dropped_alone(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r") as req:
        req.set_attribute("prompt.id", "greeting-3")
        req.set_attribute("retries", 2)
        req.set_attribute("cached", True)
        req.set_attribute("temperature", 0.2)
        req.set_attribute("long", "y" * 5000)
        req.set_attribute("bad key!", "x")
        req.set_attribute("nan", math.nan)
        req.set_attribute("obj", [1, 2])  # type: ignore[arg-type]
    (event,) = publisher.events
    assert event.attributes["prompt.id"] == "greeting-3"
    assert event.attributes["retries"] == 2
    assert event.attributes["cached"] is True
    assert event.attributes["temperature"] == 0.2
    assert len(str(event.attributes["long"])) == MAX_ATTRIBUTE_VALUE_CHARS
    assert set(event.attributes) == {"prompt.id", "retries", "cached", "temperature", "long"}
    assert tracer.dropped_attributes == 3
    assert tracer.invalid_spans == 0


def test_attributes_beyond_the_bound_are_dropped(tracer: Tracer, publisher: ListPublisher) -> None:
    with tracer.request("r") as req:
        for n in range(MAX_ATTRIBUTES + 3):
            req.set_attribute(f"a{n}", n)
        req.set_attribute("a0", "overwrite is fine")
    (event,) = publisher.events
    assert len(event.attributes) == MAX_ATTRIBUTES
    assert event.attributes["a0"] == "overwrite is fine"
    assert tracer.dropped_attributes == 3


def test_explicit_times_record_known_work_without_a_clock(
    publisher: ListPublisher,
) -> None:
    def no_clock() -> datetime:
        raise AssertionError("the clock must not be read when times are explicit")

    tracer = Tracer("sql-copilot", "v13", publisher, clock=no_clock)
    req = tracer.request("query", start_time=T0)
    llm = req.llm("write-sql", provider="google", model="gemini-2.5-flash", start_time=T0)
    llm.set_usage(input_tokens=100, output_tokens=20, cost_usd=0.0001)
    llm.end(end_time=T0 + timedelta(seconds=1))
    req.set_outcome(task_completed=False)
    req.end(end_time=T0 + timedelta(seconds=2))
    req.end(end_time=T0 + timedelta(seconds=9))  # a second end is a no-op

    llm_event, root = publisher.events
    assert llm_event.duration_ms == 1000
    assert llm_event.cost_usd == 0.0001
    assert root.duration_ms == 2000
    assert root.task_completed is False
    assert len(publisher.events) == 2


def test_a_raising_publisher_never_reaches_agent_code(clock: FakeClock) -> None:
    class Broken(ListPublisher):
        def publish(self, event: TraceEvent) -> None:
            raise OSError("disk full")

    tracer = Tracer("a", "v1", Broken(), clock=clock)
    with tracer.request("r"):
        pass
    assert tracer.publish_errors == 1


def test_events_survive_the_json_round_trip_the_worker_does(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    with tracer.request("r", tenant="t") as req:
        with req.llm("d", provider="openai", model="gpt-4o") as llm:
            llm.set_usage(input_tokens=1, output_tokens=2, cost_usd=0.5)
            llm.set_attribute("k", "v")
        req.set_outcome(task_completed=True, quality_score=0.25)
    for event in publisher.events:
        assert TraceEvent.model_validate_json(event.model_dump_json()) == event


def test_numpy_style_integers_are_accepted_as_token_counts(
    tracer: Tracer, publisher: ListPublisher
) -> None:
    class NumpyLikeInt(int):
        """Stands in for numpy.int64 without importing numpy: an int subclass."""

    with tracer.request("r") as req:
        req.set_usage(input_tokens=NumpyLikeInt(7))
    assert type(publisher.events[0].input_tokens) is int


def test_span_ids_use_all_their_bits(publisher: ListPublisher) -> None:
    tracer = Tracer("a", "v1", publisher)  # real uuid4 ids
    for _ in range(300):
        with tracer.request("r"):
            pass
    span_ids = [e.span_id for e in publisher.events]
    # Without folding, a UUID4's variant bits would pin the first digit to 8-b.
    assert len({s[0] for s in span_ids}) > 8


# --------------------------------------------------------------------------- routing


def routed_tracer(publisher: ListPublisher, weight: float) -> Tracer:
    v12, v13 = example_version("support-bot", "v12"), example_version("support-bot", "v13")
    routing = RoutingTable(deployments_topic="d", versions_topic="v", startup_wait_s=0)
    state = rollout_state(v12, v13, weight=weight, rollout_id="r", generation=4)
    routing.apply(
        [Record("v", v.key.encode(), v.model_dump_json().encode()) for v in (v12, v13)]
        + [Record("d", b"support-bot", state.model_dump_json().encode())]
    )
    return Tracer("support-bot", "v11", publisher, router=routing)


def test_a_routed_request_stamps_its_version_on_every_span_and_hands_over_the_bundle(
    publisher: ListPublisher,
) -> None:
    tracer = routed_tracer(publisher, weight=1.0)
    with (
        tracer.request("answer", route_key="user-1") as req,
        req.llm("draft", provider="openai", model="gpt-4o-mini") as llm,
        llm.tool("search"),
    ):
        pass
    assert (req.version, req.generation) == ("v13", 4)
    assert req.bundle is not None and "v13" in req.bundle.prompts["system"]
    assert {e.version for e in publisher.events} == {"v13"} and len(publisher.events) == 3


def test_routed_requests_of_one_key_stick_to_one_version(publisher: ListPublisher) -> None:
    tracer = routed_tracer(publisher, weight=0.5)
    versions = {k: tracer.request("answer", route_key=f"user-{k}").version for k in range(200)}
    again = {k: tracer.request("answer", route_key=f"user-{k}").version for k in range(200)}
    assert versions == again and set(versions.values()) == {"v12", "v13"}


def test_without_a_router_every_request_runs_the_tracers_version(tracer: Tracer) -> None:
    req = tracer.request("answer", route_key="user-1")
    assert (req.version, req.bundle, req.generation) == ("v12", None, None)
