"""Human approval on the real broker: an agent's tool call held by its version's policy until
a person decides with ``coalmine approvals`` from another process; denied, timed out,
decided twice, decided late; many calls pending at once on one thread."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from schemas.approval import ApprovalDecision, ApprovalRequest, Decision
from schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS
from schemas.trace import APPROVALS_ASKED_ATTRIBUTE, SpanKind, SpanStatus
from schemas.version import (
    AgentBundle,
    ApprovalPolicy,
    ArgumentCondition,
    Comparison,
    ModelSpec,
    OnTimeout,
    ToolSpec,
)
from streams.devtools.control_records import ControlWriter, approval_decision, approval_request
from streams.devtools.localkafka import free_loopback_port
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import (
    ApprovalDeniedError,
    Approvals,
    ApprovalTimeoutError,
    ApprovalUnavailableError,
    KafkaPublisher,
    Tracer,
)
from streams.sdk.compacted import read_to_end
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.controller_harness import coalmine
from tests.integration.harness import isolated_settings, worker
from tests.unit.sdk.test_tracer import ListPublisher

__all__ = ["worker"]  # the fixture, imported for the test below
T = TypeVar("T")
AGENT = "support-bot"
BUNDLE = AgentBundle(
    model=ModelSpec(provider="openai", model="gpt-4o-mini"),
    tools=(
        ToolSpec(
            name="refund",
            approval=ApprovalPolicy(
                when=(ArgumentCondition(field="amount", op=Comparison.GT, value=100),),
                timeout_s=60,
                redact=("card",),
            ),
        ),
        ToolSpec(name="send_email", approval=ApprovalPolicy(timeout_s=2)),
        ToolSpec(name="tag", approval=ApprovalPolicy(timeout_s=2, on_timeout=OnTimeout.ALLOW)),
    ),
)


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    isolated = replace(isolated_settings(kafka_settings, tmp_path), sdk_router_fetch_wait_ms=10)
    ensure_topics(isolated)
    return isolated


@pytest.fixture
def approvals(settings: Settings) -> Iterator[Approvals]:
    with Approvals(settings) as approvals:
        yield approvals


class Tools:
    """Tools that count their runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def refund(self, amount: int, card: str) -> str:
        with self._lock:
            self.runs.append(("refund", amount))
        return f"refunded {amount}"

    async def arefund(self, amount: int, card: str) -> str:
        return self.refund(amount, card)


def requests_on_topic(
    settings: Settings, expected: int, timeout_s: float = 30
) -> list[ApprovalRequest]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_to_end(client_config(settings), settings.topic(APPROVAL_REQUESTS))
        if len(records) >= expected or time.monotonic() > deadline:
            return [ApprovalRequest.model_validate_json(r.value or b"") for r in records]
        time.sleep(0.1)


def decisions_on_topic(settings: Settings) -> list[ApprovalDecision]:
    records = read_to_end(client_config(settings), settings.topic(APPROVAL_DECISIONS))
    return [ApprovalDecision.model_validate_json(r.value or b"") for r in records]


def agent(approvals: Approvals) -> tuple[ListPublisher, Tracer, Tools]:
    """An agent of version v1 of :data:`BUNDLE`: its spans, its tracer, its tools."""
    publisher = ListPublisher()
    return publisher, Tracer(AGENT, "v1", publisher, bundle=BUNDLE, approvals=approvals), Tools()


def in_thread(call: Callable[[], T]) -> Future[T]:
    """``call()`` in a thread of its own: the agent, while the test plays the person."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_a_call_held_until_approved_from_another_process_runs_once(
    settings: Settings, approvals: Approvals
) -> None:
    publisher, tracer, tools = agent(approvals)

    def agent_task() -> object:
        with tracer.request("refund-order") as req:
            small = req.call_tool("refund", {"amount": 20, "card": "4111"}, tools.refund)
            assert tools.runs == [("refund", 20)]  # under the limit: ran at once
            return small, req.call_tool("refund", {"amount": 250, "card": "4111"}, tools.refund)

    task = in_thread(agent_task)
    (request,) = requests_on_topic(settings, 1)
    assert request.arguments == {"amount": 250, "card": "[redacted]"}
    assert request.asks_because == "amount > 100"
    listed = coalmine(settings, "approvals", "list", "--agent", AGENT)
    assert listed.returncode == 0, listed.stderr
    assert request.id in listed.stdout and "pending" in listed.stdout
    assert tools.runs == [("refund", 20)]  # held

    approved = coalmine(settings, "approvals", "approve", request.id, "--reason", "known customer")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == f"approved: refund of {AGENT} v1 ({request.id})\n"
    assert task.result(timeout=30) == ("refunded 20", "refunded 250")
    assert tools.runs == [("refund", 20), ("refund", 250)]

    # The same approval again, and a deny after it: refused, each in one line; nothing reruns.
    for decision in ("approve", "deny"):
        again = coalmine(
            settings, "approvals", decision, request.id, "--reason", "twice", "--by", "bo"
        )
        assert again.returncode == 2
        assert again.stderr.startswith("coalmine: error: refused: already decided: approve by ")
        assert len(again.stderr.splitlines()) == 1
    assert tools.runs == [("refund", 20), ("refund", 250)]

    wait = publisher.by_name("approval:refund")
    assert wait.kind is SpanKind.CUSTOM and wait.status is SpanStatus.OK
    assert wait.attributes["approval.id"] == request.id
    assert wait.attributes["approval.outcome"] == "granted"
    assert request.span_id == wait.span_id and request.trace_id == wait.trace_id
    assert [e.name for e in publisher.events].count("refund") == 2  # two tool spans
    # One of the request's two calls was held: the count the judge's approval rate reads.
    assert publisher.by_name("refund-order").attributes == {APPROVALS_ASKED_ATTRIBUTE: 1}


def test_one_decision_record_delivered_twice_applies_once(
    settings: Settings, approvals: Approvals
) -> None:
    _, tracer, tools = agent(approvals)

    def agent_task() -> object:
        with tracer.request("refund-order") as req:
            return req.call_tool("refund", {"amount": 500, "card": "x"}, tools.refund)

    task = in_thread(agent_task)
    (request,) = requests_on_topic(settings, 1)
    approve = approval_decision(request, Decision.APPROVE)
    with ControlWriter(settings) as writer:
        for _ in range(2):  # as a producer retry without idempotence would deliver it
            writer.record(APPROVAL_DECISIONS, request.id, approve)
    assert task.result(timeout=30) == "refunded 500"
    assert tools.runs == [("refund", 500)]
    listed = coalmine(settings, "approvals", "list", "--all")
    assert f"{request.id}  {AGENT} v1  refund" in listed.stdout
    assert "granted  (amount > 100; by ana)" in listed.stdout


def test_a_denied_call_raises_with_the_reason_and_never_runs(
    settings: Settings, approvals: Approvals
) -> None:
    publisher, tracer, tools = agent(approvals)

    async def agent_task() -> object:
        with tracer.request("refund-order") as req:
            return await req.acall_tool("refund", {"amount": 900, "card": "x"}, tools.arefund)

    task = in_thread(lambda: asyncio.run(agent_task()))
    (request,) = requests_on_topic(settings, 1)
    denied = coalmine(settings, "approvals", "deny", request.id, "--reason", "already refunded")
    assert denied.returncode == 0, denied.stderr
    with pytest.raises(ApprovalDeniedError, match=r"denied by .*: already refunded"):
        task.result(timeout=30)
    assert tools.runs == []
    wait = publisher.by_name("approval:refund")
    assert wait.status is SpanStatus.ERROR and wait.error_type == "ApprovalDeniedError"
    assert publisher.by_name("refund-order").error_type == "ApprovalDeniedError"


def test_nobody_deciding_times_out_and_the_late_approval_is_refused(
    settings: Settings, approvals: Approvals
) -> None:
    tracer = Tracer(AGENT, "v1", ListPublisher(), bundle=BUNDLE, approvals=approvals)
    sent: list[str] = []
    tagged: list[str] = []

    def send_email(to: str) -> None:
        sent.append(to)

    def tag(label: str) -> None:
        tagged.append(label)

    with tracer.request("notify") as req:
        with pytest.raises(ApprovalTimeoutError, match="nobody approved it by"):
            req.call_tool("send_email", {"to": "a@example.com"}, send_email)
        # on_timeout: allow runs the tool once the expire is in the log.
        req.call_tool("tag", {"label": "vip"}, tag)
    assert sent == []
    assert tagged == ["vip"]
    email, _ = requests_on_topic(settings, 2)
    expires = [d for d in decisions_on_topic(settings) if d.decision is Decision.EXPIRE]
    assert len(expires) == 2 and expires[0].request_id == email.id

    late = coalmine(settings, "approvals", "approve", email.id)
    assert late.returncode == 2
    assert late.stderr.startswith("coalmine: error: refused: already decided: expire by ")


def test_an_approval_after_the_deadline_is_refused_when_nobody_expired_it(
    settings: Settings,
) -> None:
    """The agent is gone (no expire in the log): the deadline alone refuses the decision."""
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    request = approval_request(AGENT, asked_at=ten_minutes_ago, timeout_s=300)
    with ControlWriter(settings) as writer:
        writer.record(APPROVAL_REQUESTS, request.id, request)
    late = coalmine(settings, "approvals", "approve", request.id)
    assert late.returncode == 2
    assert late.stderr.startswith("coalmine: error: refused: after the deadline (")
    listed = coalmine(settings, "approvals", "list", "--all", "--agent", AGENT)
    assert "timed_out" in listed.stdout
    unknown = coalmine(settings, "approvals", "approve", "f" * 32)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(f"coalmine: error: no approval request {'f' * 32} (see ")


def test_many_pending_calls_hold_no_thread_each(settings: Settings, approvals: Approvals) -> None:
    _, tracer, tools = agent(approvals)
    calls = 200
    threads: dict[str, int] = {}

    async def one(amount: int) -> object:
        with tracer.request("refund-order") as req:
            try:
                return await req.acall_tool(
                    "refund", {"amount": amount, "card": "x"}, tools.arefund
                )
            except ApprovalDeniedError:
                return "denied"

    async def main() -> list[object]:
        threads["before"] = threading.active_count()
        tasks = [asyncio.ensure_future(one(101 + i)) for i in range(calls)]
        while approvals.book.waiting < calls:
            await asyncio.sleep(0.05)
        threads["pending"] = threading.active_count()
        requests = await asyncio.to_thread(requests_on_topic, settings, calls)
        with ControlWriter(settings) as writer:
            for request in requests:
                odd = request.arguments["amount"] % 2
                decision = Decision.APPROVE if odd else Decision.DENY
                writer.record(APPROVAL_DECISIONS, request.id, approval_decision(request, decision))
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    print(f"threads: {threads['before']} before, {threads['pending']} with {calls} calls pending")
    assert threads["pending"] == threads["before"]
    assert results.count("denied") == calls // 2
    assert sorted(amount for _, amount in tools.runs) == [101 + i for i in range(0, calls, 2)]
    assert approvals.book.waiting == 0


def test_a_closed_approvals_asks_nobody_and_closes_once(settings: Settings) -> None:
    approvals = Approvals(settings)
    tracer = Tracer(AGENT, "v1", ListPublisher(), bundle=BUNDLE, approvals=approvals)
    tools = Tools()
    approvals.close()
    approvals.close()  # a second close changes nothing
    with (
        pytest.raises(ApprovalUnavailableError, match="its Approvals is closed"),
        tracer.request("refund-order") as req,
    ):
        req.call_tool("refund", {"amount": 500, "card": "x"}, tools.refund)
    assert tools.runs == []
    assert requests_on_topic(settings, 0) == []


AGENT_WITHOUT_BROKER = """
import sys, time
from streams.sdk import Approvals, SdkSettings
with Approvals(SdkSettings(kafka_bootstrap=sys.argv[1])):
    time.sleep(3)
"""


def test_an_agent_whose_broker_is_down_logs_a_line_not_librdkafka_s_flood() -> None:
    """librdkafka writes a line to stderr per reconnect attempt (every 0.5 s here) unless the
    client is given a logger; the agent's logging gets them, rate-limited."""
    nobody = f"127.0.0.1:{free_loopback_port()}"
    run = subprocess.run(
        [sys.executable, "-c", AGENT_WITHOUT_BROKER, nobody],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    raw = [line for line in run.stderr.splitlines() if line.startswith("%")]
    assert raw == [] and len(run.stderr.splitlines()) <= 4, run.stderr


def decide(settings: Settings, request: ApprovalRequest, decision: Decision) -> None:
    """A person's decision, produced as ``coalmine approvals`` would."""
    with ControlWriter(settings) as writer:
        writer.record(APPROVAL_DECISIONS, request.id, approval_decision(request, decision))


def test_the_worker_stores_requests_and_decisions_and_sums_them_per_version(
    worker: WorkerProcess,
) -> None:
    settings = worker.settings
    tools = Tools()
    outcomes: list[tuple[str, str]] = []
    publisher = KafkaPublisher.from_settings(settings)  # the spans go to the worker too
    with Approvals(settings) as approvals:
        tracers = {
            v: Tracer(AGENT, v, publisher, bundle=BUNDLE, approvals=approvals) for v in ("v1", "v2")
        }

        def call(version: str, tool: str, amount: int) -> None:
            with tracers[version].request("task") as req:
                try:
                    req.call_tool(tool, {"amount": amount, "card": "x"}, tools.refund)
                    outcomes.append((version, "granted"))
                except ApprovalDeniedError:
                    outcomes.append((version, "denied"))
                except ApprovalTimeoutError:
                    outcomes.append((version, "timed_out"))

        # v1: granted, granted (and approved once more: refused), denied; v2: granted, and
        # a call nobody decides (send_email's 2 s), approved late (refused).
        plan = [
            ("v1", Decision.APPROVE, 2),
            ("v1", Decision.APPROVE, 1),
            ("v1", Decision.DENY, 1),
            ("v2", Decision.APPROVE, 1),
        ]
        for number, (version, decision, times) in enumerate(plan):
            task = in_thread(functools.partial(call, version, "refund", 1000))
            request = requests_on_topic(settings, number + 1)[-1]
            for _ in range(times):
                decide(settings, request, decision)
            task.result(timeout=30)
        call("v2", "send_email", 0)
        timed_out = requests_on_topic(settings, len(plan) + 1)[-1]
        decide(settings, timed_out, Decision.APPROVE)
        with tracers["v2"].request("task") as req:  # a call its policy does not hold
            req.call_tool("refund", {"amount": 5, "card": "x"}, tools.refund)
    assert publisher.flush(30) == 0
    publisher.close()
    assert sorted(outcomes) == [
        ("v1", "denied"),
        ("v1", "granted"),
        ("v1", "granted"),
        ("v2", "granted"),
        ("v2", "timed_out"),
    ]
    assert len(tools.runs) == 4

    # People's time per version, from the topics' own append times.
    records = read_to_end(client_config(settings), settings.topic(APPROVAL_REQUESTS))
    asked_at = {ApprovalRequest.model_validate_json(r.value or b"").id: r for r in records}
    first: dict[str, int] = {}
    for record in read_to_end(client_config(settings), settings.topic(APPROVAL_DECISIONS)):
        sent = ApprovalDecision.model_validate_json(record.value or b"")
        first.setdefault(sent.request_id, record.timestamp_ms or 0)
    waits: dict[str, list[float]] = {"v1": [], "v2": []}
    for request_id, decided in first.items():
        request = ApprovalRequest.model_validate_json(asked_at[request_id].value or b"")
        if request.tool == "refund":
            waits[request.version].append(
                (decided - (asked_at[request_id].timestamp_ms or 0)) / 1000
            )

    query = (
        "SELECT version, asked, granted, denied, timed_out, pending, refused_decisions, "
        "round(mean_seconds_to_decision, 3) FROM coalmine.approval_summary ORDER BY version"
    )
    expected = [
        ["v1", 3, 2, 1, 0, 0, 1, round(sum(waits["v1"]) / 3, 3)],
        ["v2", 2, 1, 0, 1, 0, 1, round(waits["v2"][0], 3)],
    ]
    assert rows_within(worker, query, expected) == expected
    # The judge's approval rate: each request span counts the calls its policy held.
    windows = (
        "SELECT version, sum(requests), sum(approvals_asked) FROM coalmine.version_stats "
        f"WHERE agent = '{AGENT}' GROUP BY version ORDER BY version"
    )
    expected = [["v1", 3, 3], ["v2", 3, 2]]
    assert rows_within(worker, windows, expected) == expected


def rows_within(
    worker: WorkerProcess, query: str, expected: list[list[object]]
) -> list[list[object]]:
    """The query's rows once they equal ``expected``, or after a minute, whatever they are."""
    deadline = time.monotonic() + 60
    rows: list[list[object]] = []
    while time.monotonic() < deadline:
        rows = [list(row) for row in worker.sql(query)]
        if rows == expected:
            break
        time.sleep(0.5)
    return rows


def test_list_follow_prints_new_requests_and_each_decisions_verdict(settings: Settings) -> None:
    request = approval_request(AGENT)
    with subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "approvals", "list", "--follow"],
        env={**os.environ, **settings.as_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follow:
        assert follow.stdout is not None and follow.stderr is not None
        stuck = threading.Timer(60, follow.kill)  # a line that never comes ends the reads
        stuck.start()
        try:
            assert follow.stderr.readline().startswith("(following")  # what comes now is new
            with ControlWriter(settings) as writer:
                writer.record(APPROVAL_REQUESTS, request.id, request)
                for decision in (Decision.DENY, Decision.APPROVE):
                    writer.record(
                        APPROVAL_DECISIONS, request.id, approval_decision(request, decision)
                    )
            lines = [follow.stdout.readline() for _ in range(3)]
        finally:
            stuck.cancel()
            follow.terminate()
    assert lines[0].startswith(f"{request.id}  {AGENT} v1  refund {{}}  pending  (every call; ")
    assert lines[1] == f"{request.id}  deny by ana: applied\n"
    assert lines[2] == f"{request.id}  approve by ana: refused, already decided: deny by ana\n"
