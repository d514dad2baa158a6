"""The SDK's side of approval without Kafka: the book of pending calls fed decision records,
and the tool calls that never need to ask (or cannot)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from schemas.approval import ApprovalDecision, ApprovalRequest, Decision, Outcome
from schemas.trace import APPROVALS_ASKED_ATTRIBUTE, SpanKind, SpanStatus
from schemas.version import AgentBundle, ApprovalPolicy, ModelSpec, OnTimeout, ToolSpec
from streams.sdk import ApprovalDeniedError, ApprovalTimeoutError, ApprovalUnavailableError, Tracer
from streams.sdk.approvals import ApprovalBook, ApprovalResult
from streams.sdk.compacted import Record
from tests.unit.sdk.test_tracer import ListPublisher

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOPIC = "coalmine.approval-decisions"
BUNDLE = AgentBundle(
    model=ModelSpec(provider="openai", model="gpt-4o-mini"),
    tools=(ToolSpec(name="refund", approval=ApprovalPolicy()), ToolSpec(name="search")),
)


def request(on_timeout: OnTimeout = OnTimeout.DENY) -> ApprovalRequest:
    return ApprovalRequest(
        id=uuid4().hex,
        time=T0,
        deadline=T0 + timedelta(minutes=1),
        on_timeout=on_timeout,
        agent="support-bot",
        version="v1",
        tool="refund",
        asks_because="every call",
        trace_id="1" * 32,
        span_id="2" * 16,
        requested_by="test",
    )


def record(kind: Decision, request_id: str, at: datetime, offset: int = 0) -> Record:
    value = ApprovalDecision(
        id=uuid4().hex,
        request_id=request_id,
        agent="support-bot",
        time=at,
        decision=kind,
        decided_by="ana",
    ).model_dump_json()
    return Record(TOPIC, request_id.encode(), value.encode(), 0, offset, int(at.timestamp() * 1000))


def test_a_pending_call_is_settled_once_by_the_first_decision_in_time() -> None:
    book = ApprovalBook(lambda: T0)
    asked = request()
    pending = book.register(asked)
    book.apply(
        [
            record(Decision.APPROVE, uuid4().hex, T0),  # another process's request: passed over
            Record(TOPIC, None, b"{not json", 0, 1),  # skipped, logged
            record(Decision.APPROVE, asked.id, T0 + timedelta(seconds=5)),
            record(Decision.DENY, asked.id, T0 + timedelta(seconds=6)),
        ]
    )
    assert pending.settled.is_set()
    assert pending.result is not None
    assert pending.result.outcome is Outcome.GRANTED
    assert pending.result.runs
    assert book.waiting == 0
    assert book.refused == 0  # the deny came after the call was settled: not followed any more


def test_a_late_approval_is_refused_and_the_expire_after_it_decides() -> None:
    book = ApprovalBook(lambda: T0)
    asked = request()
    pending = book.register(asked)
    assert book.due(asked.deadline - timedelta(seconds=1)) == []
    assert book.due(asked.deadline) == [asked]
    assert book.due(asked.deadline + timedelta(seconds=9)) == []  # each expire sent once
    late = asked.deadline + timedelta(seconds=1)
    book.apply([record(Decision.APPROVE, asked.id, late), record(Decision.EXPIRE, asked.id, late)])
    assert book.refused == 1
    assert pending.result is not None
    assert pending.result.outcome is Outcome.TIMED_OUT
    with pytest.raises(ApprovalTimeoutError, match="nobody approved it by 12:01:00 UTC"):
        pending.result.raise_unless_runs()


def test_a_timeout_runs_only_when_the_policy_allows_and_the_log_confirmed_it() -> None:
    allowed = request(OnTimeout.ALLOW)
    assert ApprovalResult(allowed, Outcome.TIMED_OUT, None).runs is False
    book = ApprovalBook(lambda: T0)
    pending = book.register(allowed)
    book.apply([record(Decision.EXPIRE, allowed.id, T0)])
    assert pending.result is not None and pending.result.runs


def test_a_deny_raises_with_who_and_why() -> None:
    asked = request()
    deny = ApprovalDecision(
        id=uuid4().hex,
        request_id=asked.id,
        agent="support-bot",
        time=T0,
        decision=Decision.DENY,
        decided_by="ana",
        reason="order already refunded",
    )
    with pytest.raises(ApprovalDeniedError, match="denied by ana: order already refunded"):
        ApprovalResult(asked, Outcome.DENIED, deny).raise_unless_runs()


def test_async_waiters_are_woken_from_another_thread_and_give_up_settles_once() -> None:
    book = ApprovalBook(lambda: T0)
    asked = request()
    pending = book.register(asked)

    async def wait() -> ApprovalResult:
        future = book.future(pending)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, book.apply, [record(Decision.DENY, asked.id, T0)])
        return await future

    result = asyncio.run(wait())
    assert result.outcome is Outcome.DENIED
    book.give_up(pending)  # already settled: nothing changes
    assert pending.result is result


def test_tools_the_policy_does_not_hold_run_at_once_in_a_tool_span() -> None:
    publisher = ListPublisher()
    tracer = Tracer("support-bot", "v1", publisher, bundle=BUNDLE)
    with tracer.request("answer") as req:
        assert req.call_tool("search", {"q": "refund policy"}, lambda q: f"found {q}") == (
            "found refund policy"
        )
        assert req.call_tool("undeclared", {}, lambda: 7) == 7
    assert [e.kind for e in publisher.events] == [SpanKind.TOOL, SpanKind.TOOL, SpanKind.REQUEST]
    assert publisher.events[-1].attributes == {}  # no approval asked: no count on the request


def test_a_call_that_must_ask_but_cannot_never_runs() -> None:
    ran: list[int] = []

    def refund(amount: int) -> None:
        ran.append(amount)

    publisher = ListPublisher()
    without_approvals = Tracer("support-bot", "v1", publisher, bundle=BUNDLE)
    without_bundle = Tracer("support-bot", "v1", publisher)
    for tracer, message in [
        (without_approvals, "the tracer was given no Approvals"),
        (without_bundle, "the bundle of support-bot v1 is not known"),
    ]:
        with (
            pytest.raises(ApprovalUnavailableError, match=message),
            tracer.request("answer") as req,
        ):
            req.call_tool("refund", {"amount": 1}, refund)
    assert ran == []
    assert all(e.status is SpanStatus.ERROR for e in publisher.events)
    # The policy held the call without a way to ask: that counts as asked, for the judge;
    # without the bundle nobody can tell whether it would have.
    requests = [e for e in publisher.events if e.kind is SpanKind.REQUEST]
    assert [r.attributes.get(APPROVALS_ASKED_ATTRIBUTE) for r in requests] == [1, None]
