"""The traffic generator's pure core: determinism, configured rates, valid linked spans.

Statistical checks run over 20,000 requests and use tolerances of at least five standard
errors (each one's arithmetic is beside it), so a correct generator fails one by chance with
probability below one in a million, whatever the seed; a wrong rate fails it.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from schemas.deployment import Phase
from schemas.trace import SpanKind, SpanStatus, TraceEvent
from streams.devtools import generate, traffic
from streams.devtools.control_records import example_version, rollout_state
from streams.devtools.generate import GeneratorProgress, TrafficPlan, simulate
from streams.devtools.traffic import MODELS
from streams.sdk import PublisherStats, RoutingTable
from streams.sdk.compacted import Record
from streams.settings import Settings
from tests.unit.sdk.test_tracer import ListPublisher

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
N_REQUESTS = 20_000
PLAN = TrafficPlan(
    rate=100.0,
    canary_share=0.1,
    error_rate=0.02,
    canary_error_rate=0.10,
    canary_latency_factor=2.0,
    canary_quality_delta=-0.1,
    seed=42,
)
CANARY_VERSIONS = {a.canary_version for a in PLAN.agents}


@pytest.fixture(scope="module")
def events() -> list[TraceEvent]:
    return list(simulate(PLAN, START, N_REQUESTS))


@pytest.fixture(scope="module")
def requests(events: list[TraceEvent]) -> list[TraceEvent]:
    return [e for e in events if e.kind is SpanKind.REQUEST]


def split(requests: list[TraceEvent]) -> tuple[list[TraceEvent], list[TraceEvent]]:
    canary = [r for r in requests if r.version in CANARY_VERSIONS]
    stable = [r for r in requests if r.version not in CANARY_VERSIONS]
    return stable, canary


def share(items: list[TraceEvent], predicate: Callable[[TraceEvent], object]) -> float:
    return sum(1 for item in items if predicate(item)) / len(items)


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    first = list(simulate(PLAN, START, 300))
    again = list(simulate(PLAN, START, 300))
    other = list(simulate(TrafficPlan(seed=43), START, 300))
    assert first == again  # ids included
    assert [e.event_id for e in first] != [e.event_id for e in other]


def test_one_request_span_per_request_at_the_planned_start(requests: list[TraceEvent]) -> None:
    assert len(requests) == N_REQUESTS
    assert [r.start_time for r in requests[:3]] == [
        START + timedelta(seconds=i / PLAN.rate) for i in range(3)
    ]


def test_every_event_survives_the_json_round_trip(events: list[TraceEvent]) -> None:
    for event in events[:5000]:
        assert TraceEvent.model_validate_json(event.model_dump_json()) == event


def test_spans_link_to_their_request_and_lie_within_it(events: list[TraceEvent]) -> None:
    traces: dict[str, list[TraceEvent]] = defaultdict(list)
    for event in events:
        traces[event.trace_id].append(event)
    assert len(traces) == N_REQUESTS
    for trace_id, spans in traces.items():
        assert re.fullmatch("[0-9a-f]{32}", trace_id)
        *children, root = spans  # the request ends, and is published, last
        assert root.kind is SpanKind.REQUEST and root.parent_span_id is None
        for child in children:
            assert child.kind is not SpanKind.REQUEST
            assert child.parent_span_id == root.span_id
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time
            assert (child.agent, child.version, child.tenant) == (
                root.agent,
                root.version,
                root.tenant,
            )
        # Steps run one after another.
        for before, after in itertools.pairwise(children):
            assert before.end_time <= after.start_time
    assert len({e.event_id for e in events}) == len(events)
    assert len({e.span_id for e in events}) == len(events)


def test_request_shapes(events: list[TraceEvent]) -> None:
    kinds: dict[str, Counter[SpanKind]] = defaultdict(Counter)
    for event in events:
        kinds[event.trace_id][event.kind] += 1
    for counts in kinds.values():
        assert counts[SpanKind.REQUEST] == 1
        assert 1 <= counts[SpanKind.LLM] <= 3
        assert counts[SpanKind.TOOL] <= 3
        assert counts[SpanKind.RETRIEVAL] <= 1
    models = {(e.provider, e.model) for e in events if e.kind is SpanKind.LLM}
    assert models == {(m.provider, m.model) for m in MODELS.values()}
    assert all(e.model is None for e in events if e.kind is not SpanKind.LLM)


def test_canary_share_is_as_configured(requests: list[TraceEvent]) -> None:
    # sd = sqrt(0.1 * 0.9 / 20000) = 0.0021; 0.012 is 5.7 sd.
    assert share(requests, lambda r: r.version in CANARY_VERSIONS) == pytest.approx(0.1, abs=0.012)
    agents = Counter(r.agent for r in requests)
    assert set(agents) == {"support-bot", "research-agent", "sql-copilot"}
    for count in agents.values():
        # sd = sqrt((1/3)(2/3) / 20000) = 0.0033; 0.02 is 6 sd.
        assert count / N_REQUESTS == pytest.approx(1 / 3, abs=0.02)


def test_error_rates_are_as_configured(requests: list[TraceEvent]) -> None:
    stable, canary = split(requests)

    def failed(r: TraceEvent) -> bool:
        return r.status is SpanStatus.ERROR

    # stable: n ~ 18000, sd = sqrt(0.02 * 0.98 / 18000) = 0.0010; 0.006 is 5.7 sd.
    assert share(stable, failed) == pytest.approx(0.02, abs=0.006)
    # canary: n ~ 2000 (at least 1900 by the share check), sd = sqrt(0.1 * 0.9 / 1900)
    # = 0.0069; 0.035 is 5.1 sd.
    assert share(canary, failed) == pytest.approx(0.10, abs=0.035)


def test_a_failed_request_names_the_step_that_failed_it(events: list[TraceEvent]) -> None:
    last_child: dict[str, TraceEvent] = {}
    for event in events:
        if event.kind is SpanKind.REQUEST:
            if event.status is SpanStatus.ERROR:
                step = last_child[event.trace_id]
                assert step.status is SpanStatus.ERROR
                assert event.error_type == step.error_type
                assert event.error_type in traffic.FAILURE_SECONDS
                assert (event.task_completed, event.quality_score) == (False, None)
            else:
                assert event.error_type is None
                assert event.quality_score is not None
        else:
            last_child[event.trace_id] = event


def test_quality_and_completion_shift_by_the_canary_delta(requests: list[TraceEvent]) -> None:
    stable, canary = split(requests)

    def mean_quality(rs: list[TraceEvent]) -> float:
        return statistics.fmean(r.quality_score for r in rs if r.quality_score is not None)

    # Beta with a + b = 12: sd = sqrt(m(1 - m) / 13). Stable: 0.111 / sqrt(17000) = 0.00085,
    # so 0.01 is 12 sd; canary: 0.127 / sqrt(1700) = 0.0031, so 0.02 is 6.5 sd.
    assert mean_quality(stable) == pytest.approx(0.8, abs=0.01)
    assert mean_quality(canary) == pytest.approx(0.7, abs=0.02)
    # P(completed) = P(ok) * rate: stable 0.98 * 0.92 = 0.9016, sd = 0.0022, 0.012 is 5.4 sd;
    # canary 0.9 * 0.82 = 0.738, sd = sqrt(0.738 * 0.262 / 1900) = 0.0101, 0.055 is 5.4 sd.
    assert share(stable, lambda r: r.task_completed) == pytest.approx(0.9016, abs=0.012)
    assert share(canary, lambda r: r.task_completed) == pytest.approx(0.738, abs=0.055)


def test_canary_latency_is_scaled_by_the_factor(events: list[TraceEvent]) -> None:
    # An ok llm span lasts base(model, output tokens) * LogNormal(0, 0.3) * factor, so the
    # median of duration / base estimates the factor. The sd of a log-median over n ~ 3500
    # canary spans is 1.2533 * 0.3 / sqrt(3500) = 0.0064, so 5 % is 7.8 sd.
    ratios: dict[bool, list[float]] = defaultdict(list)
    for e in events:
        if e.kind is SpanKind.LLM and e.status is SpanStatus.OK:
            assert e.model is not None
            m = MODELS[e.model]
            base_ms = m.first_token_ms + m.ms_per_output_token * e.output_tokens
            ratios[e.version in CANARY_VERSIONS].append(e.duration_ms / base_ms)
    assert statistics.median(ratios[False]) == pytest.approx(1.0, rel=0.05)
    assert statistics.median(ratios[True]) == pytest.approx(2.0, rel=0.05)


def test_a_looping_canary_makes_more_llm_calls_at_the_same_price() -> None:
    """Twice the llm calls per canary request (no failures, which cut a request short): it
    goes round its planned calls twice, each call drawn as the planned one was (same step,
    same context size), so a call costs what it did."""
    plan = replace(PLAN, error_rate=0.0, canary_error_rate=0.0, canary_llm_calls_factor=2.0)
    names: dict[str, list[str]] = defaultdict(list)
    canary: dict[str, bool] = {}
    for e in simulate(plan, START, 3000):
        if e.kind is SpanKind.LLM:
            names[e.trace_id].append(e.name)
        canary[e.trace_id] = e.version in CANARY_VERSIONS
    counts = {looping: Counter[int]() for looping in (False, True)}
    for trace, calls in names.items():
        counts[canary[trace]][len(calls)] += 1
        if canary[trace]:
            planned = ["plan", "act", "answer"][: len(calls) // 2]
            assert calls == planned * 2
    assert set(counts[False]) == {1, 2, 3}
    assert set(counts[True]) == {2, 4, 6}
    with pytest.raises(ValueError, match="canary_llm_calls_factor"):
        replace(PLAN, canary_llm_calls_factor=0.0)


def test_some_llm_spans_carry_their_own_cost(events: list[TraceEvent]) -> None:
    llm = [e for e in events if e.kind is SpanKind.LLM]
    # n ~ 40000, sd = sqrt(0.1 * 0.9 / 40000) = 0.0015; 0.01 is 6.7 sd.
    assert share(llm, lambda e: e.cost_usd is not None) == pytest.approx(0.1, abs=0.01)
    assert all(e.cost_usd is None for e in events if e.kind is not SpanKind.LLM)
    assert all(e.input_tokens > 0 for e in llm if e.status is SpanStatus.OK)


def test_tool_errors_happen_inside_successful_requests(events: list[TraceEvent]) -> None:
    tools = [e for e in events if e.kind is SpanKind.TOOL]
    assert {e.error_type for e in tools} == {None, "ToolTimeout", "ToolExecutionError"}
    # 5 % handled errors, plus the fatal ones of failed requests (about 0.8 % of tool spans:
    # ~2.8 % of requests fail, ~40 % of them at a tool, ~1.5 tool spans per request).
    # n ~ 29000, sd = sqrt(0.058 * 0.942 / 29000) = 0.0014; 0.008 is 5.8 sd.
    assert share(tools, lambda e: e.status is SpanStatus.ERROR) == pytest.approx(0.058, abs=0.008)


def test_no_canary_when_its_share_is_zero() -> None:
    plan = TrafficPlan(canary_share=0.0)
    versions = {e.version for e in simulate(plan, START, 500)}
    assert versions == {a.stable_version for a in plan.agents}


def test_more_agents_than_the_catalog_get_distinct_names() -> None:
    names = [a.name for a in traffic.agent_profiles(20)]
    assert len(set(names)) == 20
    assert names[:3] == ["support-bot", "research-agent", "sql-copilot"]


# --------------------------------------------------------------------------- arguments


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="coalmine generate")
    generate.add_traffic_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_make_the_documented_plan() -> None:
    plan = TrafficPlan.from_args(parse())
    assert (plan.rate, plan.duration_s, plan.requests, len(plan.agents)) == (50.0, 30.0, None, 3)
    assert (plan.canary_share, plan.error_rate, plan.seed) == (0.1, 0.02, 7)
    assert plan.effective_canary_error_rate == 0.02
    assert plan.total_requests == 1500


def test_requests_replace_the_duration() -> None:
    plan = TrafficPlan.from_args(parse("--requests", "40", "--canary-error-rate", "0.3"))
    assert (plan.requests, plan.duration_s, plan.total_requests) == (40, None, 40)
    assert plan.effective_canary_error_rate == 0.3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--rate", "0"), "argument --rate: '0' must be between 0.001 and 1,000,000"),
        (("--rate", "fast"), "argument --rate: 'fast' is not a number"),
        (("--duration", "nan"), "argument --duration: 'nan' is not a finite number"),
        (("--canary-share", "1.5"), "argument --canary-share: '1.5' must be between 0 and 1"),
        (("--error-rate", "-0.1"), "argument --error-rate: '-0.1' must be between 0 and 1"),
        (("--agents", "0"), "argument --agents: '0' must be between 1 and 50"),
        (("--requests", "2.5"), "argument --requests: '2.5' is not a whole number"),
        (("--canary-quality-delta", "2"), "'2' must be between -1 and 1"),
        (("--requests", "5", "--duration", "3"), "not allowed with argument"),
    ],
)
def test_bad_values_give_one_readable_line(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_a_plan_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="canary_share must be in"):
        TrafficPlan(canary_share=2.0)
    with pytest.raises(ValueError, match="rate must be positive"):
        TrafficPlan(rate=-1.0)


# --------------------------------------------------------------------------- run, in memory


class CountingListPublisher(ListPublisher):
    """In-memory transport that 'delivers' everything at once."""

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(published=len(self.events), delivered=len(self.events))


def test_run_sends_the_planned_requests_ending_now_and_closes() -> None:
    publisher = CountingListPublisher()
    reports: list[GeneratorProgress] = []
    plan = TrafficPlan(rate=5000.0, duration_s=None, requests=50)
    before = datetime.now(UTC)

    code = generate.run(Settings(), plan, progress=reports.append, publisher=publisher)

    assert code == 0
    assert publisher.closed
    assert reports[-1].done and reports[-1].requests == 50
    assert reports[-1].spans == reports[-1].delivered == len(publisher.events)
    roots = [e for e in publisher.events if e.kind is SpanKind.REQUEST]
    assert len(roots) == 50
    # Recorded as they end: every request ends between the call and its return.
    assert all(before <= r.end_time <= datetime.now(UTC) for r in roots)


def test_run_returns_at_once_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    reports: list[GeneratorProgress] = []
    code = generate.run(
        Settings(),
        TrafficPlan(),
        progress=reports.append,
        stop=stop,
        publisher=CountingListPublisher(),
    )
    assert code == 0
    assert reports[-1].requests == 0


def test_run_reports_failure_when_events_are_lost() -> None:
    class Lossy(CountingListPublisher):
        @property
        def stats(self) -> PublisherStats:
            return PublisherStats(published=len(self.events), delivered=0, failed=len(self.events))

    plan = TrafficPlan(rate=5000.0, duration_s=None, requests=5)
    assert generate.run(Settings(), plan, progress=lambda p: None, publisher=Lossy()) == 1


def test_the_progress_line_reads_well() -> None:
    line = GeneratorProgress(10.0, 500, 2600, 2590, 0, 0, 0).line()
    assert line == (
        "generate:   10.0 s  500 requests (50.0/s)  2600 spans  2590 delivered  0 failed  0 dropped"
    )


def test_an_interrupted_run_closes_its_publisher_quickly_and_reraises() -> None:
    class Interrupted(CountingListPublisher):
        close_timeout: float | None = None

        def publish(self, event: TraceEvent) -> None:
            raise KeyboardInterrupt

        def close(self, timeout: float) -> None:
            self.close_timeout = timeout

    publisher = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        generate.run(Settings(), TrafficPlan(), progress=lambda p: None, publisher=publisher)
    assert publisher.close_timeout == generate.INTERRUPTED_CLOSE_TIMEOUT_S


def routing_table(state_weight: float, phase: Phase = Phase.CANARY) -> RoutingTable:
    v12, v13 = example_version("support-bot", "v12"), example_version("support-bot", "v13")
    state = rollout_state(v12, v13, weight=state_weight, rollout_id="r", generation=3, phase=phase)
    table = RoutingTable(deployments_topic="d", versions_topic="v", startup_wait_s=0)
    table.apply([Record("d", b"support-bot", state.model_dump_json().encode())])
    table.mark_ready()
    return table


def versions_of_requests(router: RoutingTable, requests: int) -> Counter[tuple[str, str]]:
    publisher = CountingListPublisher()
    plan = TrafficPlan(rate=1e6, duration_s=None, requests=requests, canary_share=0.1, seed=5)
    assert (
        generate.run(Settings(), plan, progress=lambda p: None, publisher=publisher, router=router)
        == 0
    )
    return Counter((e.agent, e.version) for e in publisher.events if e.kind is SpanKind.REQUEST)


def test_generated_traffic_follows_a_deployment_and_the_canary_share_elsewhere() -> None:
    counts = versions_of_requests(routing_table(0.5), 3000)
    bot = counts[("support-bot", "v12")] + counts[("support-bot", "v13")]
    # 10,000 simulated users split by the router: half of the bot's requests, give or take
    # five standard deviations of a binomial draw (√(n/4)).
    assert abs(counts[("support-bot", "v13")] - bot / 2) <= 5 * (bot / 4) ** 0.5
    other = counts[("research-agent", "v7")] + counts[("research-agent", "v8")]
    assert abs(counts[("research-agent", "v8")] - other * 0.1) <= 5 * (other * 0.09) ** 0.5


def test_generated_traffic_after_a_rollback_runs_only_the_stable_version() -> None:
    counts = versions_of_requests(routing_table(0.5, Phase.ROLLED_BACK), 600)
    assert counts[("support-bot", "v13")] == 0 and counts[("support-bot", "v12")] > 0
