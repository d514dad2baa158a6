"""The traffic model behind ``coalmine generate``: simulated agents, their versions, and
what one request of theirs looks like, drawn as plain data from a seeded generator.

:class:`TrafficPlan` says what to simulate; :class:`RequestDrawer` turns it into
:class:`RequestDraw` values (which agent and version, its steps, their latencies, tokens and
errors). Nothing here does I/O or reads a clock, so the same seed gives the same traffic.
Canary versions differ from their stable versions only by the plan's canary knobs (error
rate, latency factor, quality delta, llm calls per request), so a detector can be checked
against a known truth.
Which version serves a request is the plan's canary share, or, given a version chooser (a
router following the agent's deployment), the deployment's.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.trace import SpanKind

# --------------------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class ModelProfile:
    provider: str
    model: str
    first_token_ms: float
    ms_per_output_token: float
    usd_per_input_token: float
    usd_per_output_token: float


MODELS: dict[str, ModelProfile] = {
    m.model: m
    for m in (
        # List prices as in streams/data/prices.json (USD per token).
        ModelProfile("openai", "gpt-4o", 450, 12, 2.50e-6, 10.00e-6),
        ModelProfile("openai", "gpt-4o-mini", 300, 7, 0.15e-6, 0.60e-6),
        ModelProfile("anthropic", "claude-sonnet-4-5", 600, 14, 3.00e-6, 15.00e-6),
        ModelProfile("anthropic", "claude-haiku-4-5", 280, 6, 1.00e-6, 5.00e-6),
        ModelProfile("google", "gemini-2.5-flash", 250, 5, 0.30e-6, 2.50e-6),
    )
}


@dataclass(frozen=True)
class AgentProfile:
    name: str
    stable_version: str
    canary_version: str
    operation: str
    """Name of the request span."""
    models: tuple[str, ...]
    tools: tuple[str, ...]
    retrieval_probability: float


CATALOG: tuple[AgentProfile, ...] = (
    AgentProfile(
        "support-bot", "v12", "v13", "answer-question",
        ("gpt-4o-mini", "claude-haiku-4-5"), ("search_kb", "lookup_order", "create_ticket"), 0.7,
    ),
    AgentProfile(
        "research-agent", "v7", "v8", "research-topic",
        ("claude-sonnet-4-5", "gpt-4o"), ("web_search", "fetch_page", "read_pdf"), 0.9,
    ),
    AgentProfile(
        "sql-copilot", "v21", "v22", "write-query",
        ("gpt-4o", "gemini-2.5-flash"), ("describe_table", "run_sql"), 0.3,
    ),
    AgentProfile(
        "triage-bot", "v4", "v5", "triage-ticket",
        ("gemini-2.5-flash", "gpt-4o-mini"), ("classify", "assign_queue"), 0.2,
    ),
    AgentProfile(
        "code-reviewer", "v9", "v10", "review-diff",
        ("claude-sonnet-4-5", "claude-haiku-4-5"), ("fetch_diff", "run_linter", "post_comment"),
        0.5,
    ),
    AgentProfile(
        "travel-planner", "v3", "v4", "plan-trip",
        ("gpt-4o", "claude-haiku-4-5"), ("search_flights", "search_hotels", "get_weather"), 0.4,
    ),
)  # fmt: skip

MAX_AGENTS = 50


def agent_profiles(count: int) -> tuple[AgentProfile, ...]:
    """The first ``count`` catalog agents; beyond the catalog, renamed copies of it."""
    profiles = []
    for n in range(count):
        base = CATALOG[n % len(CATALOG)]
        name = base.name if n < len(CATALOG) else f"{base.name}-{n // len(CATALOG) + 1}"
        profiles.append(
            AgentProfile(
                name,
                base.stable_version,
                base.canary_version,
                base.operation,
                base.models,
                base.tools,
                base.retrieval_probability,
            )
        )
    return tuple(profiles)


USERS = 10_000
"""Simulated users per plan: a request's routing key is one of them."""
TENANTS = tuple(f"tenant-{n:02d}" for n in range(1, 13))
CHANNELS = ("chat", "email", "api")
LLM_ERRORS = ("RateLimitError", "APITimeoutError", "ContextWindowExceededError")
TOOL_ERRORS = ("ToolTimeout", "ToolExecutionError")
TOOL_ERROR_RATE = 0.05
"""Handled tool failures inside otherwise successful requests (same for every version)."""
EXPLICIT_COST_SHARE = 0.1
"""Share of llm spans that carry their own cost; the worker prices the rest."""
MAX_LLM_CALLS_FACTOR = 10.0
"""Bound of ``canary_llm_calls_factor``: at most 30 llm calls in a simulated request."""
TASK_COMPLETION_RATE = 0.92
QUALITY_MEAN = 0.8
QUALITY_CONCENTRATION = 12.0
"""Beta(a, b) with a + b = 12: a per-request standard deviation of about 0.11."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class TrafficPlan:
    """What to generate. Either ``duration_s`` or ``requests`` bounds a real-time run;
    ``canary_error_rate`` defaults to ``error_rate`` (a canary no worse than stable)."""

    rate: float = 50.0
    duration_s: float | None = 30.0
    requests: int | None = None
    agents: tuple[AgentProfile, ...] = field(default_factory=lambda: agent_profiles(3))
    canary_share: float = 0.1
    error_rate: float = 0.02
    canary_error_rate: float | None = None
    canary_latency_factor: float = 1.0
    canary_quality_delta: float = 0.0
    canary_llm_calls_factor: float = 1.0
    """A canary request makes this many times the llm calls of a stable one (rounded, at
    least one), each priced as before: an agent looping into more calls."""
    seed: int = 7

    def __post_init__(self) -> None:
        checks = {
            "rate must be positive and finite": _positive_finite(self.rate),
            "duration_s must be positive and finite": self.duration_s is None
            or _positive_finite(self.duration_s),
            "requests must be positive": self.requests is None or self.requests > 0,
            "at least one agent is needed": bool(self.agents),
            "canary_share must be in [0, 1]": 0 <= self.canary_share <= 1,
            "error_rate must be in [0, 1]": 0 <= self.error_rate <= 1,
            "canary_error_rate must be in [0, 1]": 0 <= self.effective_canary_error_rate <= 1,
            "canary_latency_factor must be positive and finite": _positive_finite(
                self.canary_latency_factor
            ),
            "canary_quality_delta must be in [-1, 1]": -1 <= self.canary_quality_delta <= 1,
            "canary_llm_calls_factor must be in (0, 10]": 0
            < self.canary_llm_calls_factor
            <= MAX_LLM_CALLS_FACTOR,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrafficPlan:
        return cls(
            rate=args.rate,
            duration_s=None if args.requests is not None else args.duration,
            requests=args.requests,
            agents=agent_profiles(args.agents),
            canary_share=args.canary_share,
            error_rate=args.error_rate,
            canary_error_rate=args.canary_error_rate,
            canary_latency_factor=args.canary_latency_factor,
            canary_quality_delta=args.canary_quality_delta,
            canary_llm_calls_factor=args.canary_llm_calls_factor,
            seed=args.seed,
        )

    @property
    def effective_canary_error_rate(self) -> float:
        return self.error_rate if self.canary_error_rate is None else self.canary_error_rate

    @property
    def total_requests(self) -> int | None:
        """How many requests a real-time run sends, or None to run until stopped."""
        if self.requests is not None:
            return self.requests
        if self.duration_s is not None:
            return max(1, round(self.rate * self.duration_s))
        return None


def _positive_finite(value: float) -> bool:
    # False for NaN as well; the [0, 1] checks above are written so that NaN fails them too.
    return 0 < value < math.inf


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class StepDraw:
    """One child span of a simulated request."""

    kind: SpanKind
    name: str
    gap_s: float
    """Idle time before the step starts."""
    duration_s: float
    model: ModelProfile | None = None
    tool_name: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class RequestDraw:
    """One simulated request: everything random about it, decided up front."""

    agent: AgentProfile
    version: str
    canary: bool
    user: str
    """The routing key."""
    tenant: str
    channel: str
    steps: tuple[StepDraw, ...]
    tail_s: float
    """Time between the last step's end and the request's end."""
    error_type: str | None
    task_completed: bool
    quality_score: float | None

    @property
    def duration_s(self) -> float:
        return sum(s.gap_s + s.duration_s for s in self.steps) + self.tail_s


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * rng.lognormvariate(0.0, sigma)


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


VersionChooser = Callable[[AgentProfile, str], "tuple[str, bool] | None"]
"""Given an agent and a request's routing key (a simulated user), the version that serves it
and whether that is the canary; None leaves the choice to the plan's canary share."""


class RequestDrawer:
    """Draws requests from a plan; all randomness comes from one seeded generator (and the
    users, the routing keys, from a second one, so that routing does not change the rest).
    ``choose`` (a router) picks versions; the plan's canary share picks where it does not."""

    def __init__(
        self, plan: TrafficPlan, rng: random.Random, choose: VersionChooser | None = None
    ) -> None:
        self.plan = plan
        self.rng = rng
        self.users = random.Random(f"{plan.seed}:users")
        self.choose = choose

    def request(self) -> RequestDraw:
        rng, plan = self.rng, self.plan
        agent = rng.choice(plan.agents)
        user = f"user-{self.users.randrange(USERS)}"
        chosen = None if self.choose is None else self.choose(agent, user)
        if chosen is None:
            canary = rng.random() < plan.canary_share
            version = agent.canary_version if canary else agent.stable_version
        else:
            version, canary = chosen
        error_rate = plan.effective_canary_error_rate if canary else plan.error_rate
        latency = plan.canary_latency_factor if canary else 1.0
        delta = plan.canary_quality_delta if canary else 0.0
        calls = plan.canary_llm_calls_factor if canary else 1.0
        steps = self._steps(agent, latency, calls)
        failed = rng.random() < error_rate
        error_type = None
        if failed:
            steps, error_type = self._fail(steps)
        completed = not failed and rng.random() < _clip(TASK_COMPLETION_RATE + delta, 0, 1)
        return RequestDraw(
            agent=agent,
            version=version,
            canary=canary,
            user=user,
            tenant=rng.choice(TENANTS),
            channel=rng.choice(CHANNELS),
            steps=steps,
            tail_s=rng.uniform(0.001, 0.005),
            error_type=error_type,
            task_completed=completed,
            # Failed requests are not judged: no quality score, as an evaluator would skip them.
            quality_score=None if failed else self._quality(delta),
        )

    def _quality(self, delta: float) -> float:
        mean = _clip(QUALITY_MEAN + delta, 0.02, 0.98)
        return self.rng.betavariate(
            mean * QUALITY_CONCENTRATION, (1 - mean) * QUALITY_CONCENTRATION
        )

    def _steps(
        self, agent: AgentProfile, latency: float, calls_factor: float
    ) -> tuple[StepDraw, ...]:
        rng = self.rng
        steps: list[StepDraw] = []
        if rng.random() < agent.retrieval_probability:
            steps.append(self._retrieval(latency))
        planned, tool_calls = rng.randint(1, 3), rng.randint(0, 3)
        # A looping agent goes round its planned calls again: each call is drawn as one of
        # them (same step, same context size), so a call costs what it did.
        llm_calls = max(1, round(planned * calls_factor))
        # Agents alternate thinking and acting: llm, tool, llm, tool, ... then what is left.
        for n in range(max(llm_calls, tool_calls)):
            if n < llm_calls:
                steps.append(self._llm(agent, n % planned, latency))
            if n < tool_calls:
                steps.append(self._tool(agent, latency))
        return tuple(steps)

    def _retrieval(self, latency: float) -> StepDraw:
        return StepDraw(
            SpanKind.RETRIEVAL, "kb", self._gap(), _lognormal(self.rng, 0.06, 0.5) * latency
        )

    def _llm(self, agent: AgentProfile, index: int, latency: float) -> StepDraw:
        rng = self.rng
        model = MODELS[rng.choice(agent.models)]
        input_tokens = max(1, round(_lognormal(rng, 900 * (index + 1), 0.6)))
        output_tokens = max(1, round(_lognormal(rng, 220, 0.7)))
        seconds = (model.first_token_ms + model.ms_per_output_token * output_tokens) / 1000
        cost = None
        if rng.random() < EXPLICIT_COST_SHARE:
            # What the provider billed, e.g. with a cached-prompt discount: below list price.
            list_price = (
                input_tokens * model.usd_per_input_token
                + output_tokens * model.usd_per_output_token
            )
            cost = round(list_price * rng.uniform(0.5, 1.0), 8)
        return StepDraw(
            SpanKind.LLM,
            ("plan", "act", "answer")[index],
            self._gap(),
            seconds * rng.lognormvariate(0, 0.3) * latency,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
        )

    def _tool(self, agent: AgentProfile, latency: float) -> StepDraw:
        rng = self.rng
        tool = rng.choice(agent.tools)
        step = StepDraw(
            SpanKind.TOOL, tool, self._gap(), _lognormal(rng, 0.18, 0.8) * latency, tool_name=tool
        )
        if rng.random() < TOOL_ERROR_RATE:  # handled: the agent carries on without it
            return _failed_step(step, rng.choice(TOOL_ERRORS), latency)
        return step

    def _fail(self, steps: tuple[StepDraw, ...]) -> tuple[tuple[StepDraw, ...], str]:
        """Make one llm or tool step fail fatally; the request stops there."""
        rng = self.rng
        candidates = [i for i, s in enumerate(steps) if s.kind in (SpanKind.LLM, SpanKind.TOOL)]
        at = rng.choice(candidates)
        step = steps[at]
        errors = LLM_ERRORS if step.kind is SpanKind.LLM else TOOL_ERRORS
        error_type = rng.choice(errors)
        return (*steps[:at], _failed_step(step, error_type, 1.0)), error_type

    def _gap(self) -> float:
        return self.rng.uniform(0.001, 0.005)


FAILURE_SECONDS = {
    "RateLimitError": 0.15,
    "APITimeoutError": 15.0,
    "ContextWindowExceededError": 0.3,
    "ToolTimeout": 10.0,
    "ToolExecutionError": 0.05,
}
"""How long a failing step takes: timeouts wait out their limit, refusals are quick."""


def _failed_step(step: StepDraw, error_type: str, latency: float) -> StepDraw:
    return StepDraw(
        step.kind,
        step.name,
        step.gap_s,
        FAILURE_SECONDS[error_type] * latency,
        model=step.model,
        tool_name=step.tool_name,
        input_tokens=step.input_tokens if error_type != "RateLimitError" else 0,
        output_tokens=0,
        error_type=error_type,
        error_message=f"simulated {error_type} in {step.name}",
    )
