"""SDK routers on a real broker: a three-step rollout driven through a running controller and
seen by routers in two other processes, a rollback request produced by hand, the fallback
before any state, and a broker outage that the last state outlives."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.deployment import DeploymentState, Phase
from schemas.plan import RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from schemas.topics import ROLLBACKS, TRACES
from schemas.version import AgentVersion
from streams.devtools import generate, localkafka
from streams.devtools.child_process import killed_after
from streams.devtools.control_records import ControlWriter, example_version, rollout_state
from streams.devtools.controller_process import ControllerProcess
from streams.devtools.router_probe import RouterProbe
from streams.sdk.router import Router
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.controller_harness import coalmine, wait_until
from tests.integration.harness import consume_spans

AGENT = "support-bot"
KEYS = 10_000
SIGMAS = 5.0
SEEN_TIMEOUT_S = 30.0
HELD = 3600.0
"""A step's minimum duration the tests never wait out: ``promote`` ends each step."""


@pytest.fixture
def controller(kafka_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A running ``coalmine controller`` on topics of its own; yields their settings."""
    settings = fresh(kafka_settings)
    with killed_after(ControllerProcess(settings, tmp_path / "controller.log")):
        yield settings


def deployment_after(settings: Settings, *args: str) -> DeploymentState:
    """Run ``coalmine ARGS`` (a deployment command, which waits for the controller's outcome)
    and return the agent's deployment state it left, as ``coalmine status --json`` says."""
    for command in (args, ("status", AGENT, "--json")):
        done = coalmine(settings, *command)
        assert done.returncode == 0, f"coalmine {' '.join(command)}: {done.stderr}"
    (state,) = json.loads(done.stdout)
    return DeploymentState.model_validate(state)


def plan_file(directory: Path, weights: tuple[float, ...]) -> Path:
    plan = RolloutPlan(steps=tuple(RolloutStep(weight=w, min_duration_s=HELD) for w in weights))
    path = directory / "plan.json"
    path.write_text(plan.model_dump_json())
    return path


def apply_deployment(settings: Settings, state: DeploymentState) -> None:
    """Make ``state`` the agent's deployment state by hand, for the tests about a router
    alone (no controller: its single writer is not running there)."""
    with ControlWriter(settings) as writer:
        writer.state(state)


def register(settings: Settings, *labels: str) -> list[AgentVersion]:
    """Example versions of the agent with these labels, on the versions topic."""
    versions = [example_version(AGENT, label) for label in labels]
    with ControlWriter(settings) as writer:
        for version in versions:
            writer.version(version)
    return versions


def fresh(settings: Settings) -> Settings:
    """Settings with topics of their own (created), on the same broker."""
    own = replace(settings, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    ensure_topics(own)
    return own


def generation_of(router: Router) -> int | None:
    state = router.deployment(AGENT)
    return None if state is None else state.generation


def within_binomial_bounds(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


def test_a_three_step_rollout_reaches_routers_in_two_processes_and_a_rollback_ends_it(
    controller: Settings, tmp_path: Path
) -> None:
    settings = controller
    register(settings, "v1", "v2")
    first = deployment_after(settings, "deploy", AGENT, "v1")  # the first version: stable at once
    assert (first.phase, first.stable_version) == (Phase.IDLE, "v1")
    with RouterProbe(settings, AGENT, routers=2) as one, RouterProbe(settings, AGENT) as two:
        assert one.ready == [True, True] and two.ready == [True]
        previous: set[int] = set()
        weights = (0.05, 0.25, 0.5)
        plan = plan_file(tmp_path, weights)
        steps = [
            ("deploy", AGENT, "v2", "--plan", str(plan)),
            ("promote", AGENT),
            ("promote", AGENT),
        ]
        for args, weight in zip(steps, weights, strict=True):
            state = deployment_after(settings, *args)
            assert (state.phase, state.canary_version, state.canary_weight) == (
                Phase.CANARY, "v2", weight,
            )  # fmt: skip
            answers = []
            for probe in (one, two):
                seen = probe.ask(op="await", generation=state.generation, timeout=SEEN_TIMEOUT_S)
                assert None not in seen["seen"], (
                    f"a router did not see generation {state.generation}"
                )
                answers.append(probe.ask(op="route", keys=KEYS, default="v0"))
            first_answer, second = answers
            assert first_answer["agree"] and second["agree"]  # the routers within a process
            assert first_answer["canary"] == second["canary"]  # and across processes
            canary = set(first_answer["canary"])
            assert within_binomial_bounds(len(canary), KEYS, weight), (len(canary), weight)
            assert previous <= canary, "a key moved back from canary to stable"
            assert first_answer["generations"] == [state.generation]
            assert first_answer["bundles"] == KEYS  # every route came with its version's bundle
            assert first_answer["versions"] == {"v2": len(canary), "v1": KEYS - len(canary)}
            previous = canary

        request = RollbackCommand(
            id=f"by-hand-{uuid.uuid4().hex}",
            time=datetime.now(UTC),
            agent=AGENT,
            from_version="v2",
            reason="error rate 3x the stable's",
            issued_by="oncall",
        )
        with ControlWriter(settings) as writer:
            writer.record(ROLLBACKS, AGENT, request)
        rolled_back = state.generation + 1  # the controller is the agent's only writer
        for probe in (one, two):
            seen = probe.ask(op="await", generation=rolled_back, timeout=SEEN_TIMEOUT_S)["seen"]
            assert None not in seen
            after = probe.ask(op="route", keys=KEYS, default="v0")
            assert after["versions"] == {"v1": KEYS} and after["canary"] == []
            assert after["generations"] == [rolled_back]
    final = deployment_after(settings, "status", AGENT)  # read again: nothing changed since
    assert (final.phase, final.generation, final.canary_weight) == (
        Phase.ROLLED_BACK, rolled_back, 0.0,
    )  # fmt: skip
    assert final.change is not None
    assert (final.change.cause, final.change.command_id, final.change.reason) == (
        "rollback", request.id, "error rate 3x the stable's",
    )  # fmt: skip


def test_generate_sends_an_agents_traffic_to_the_versions_its_deployment_names(
    controller: Settings, tmp_path: Path
) -> None:
    settings = controller
    register(settings, "v12", "v13")
    deployment_after(settings, "deploy", AGENT, "v12")
    everything = deployment_after(
        settings, "deploy", AGENT, "v13", "--plan", str(plan_file(tmp_path, (1.0,)))
    )
    assert (everything.canary_version, everything.canary_weight) == ("v13", 1.0)
    plan = generate.TrafficPlan(rate=2000.0, duration_s=None, requests=200, canary_share=0.5)
    reports: list[generate.GeneratorProgress] = []
    assert generate.run(settings, plan, progress=reports.append) == 0

    spans = consume_spans(settings, settings.topic(TRACES), expected=reports[-1].delivered)
    requests = Counter(
        (event["agent"], event["version"])
        for event in (json.loads(span) for span in spans)
        if event["kind"] == "request"
    )
    assert requests[(AGENT, "v13")] > 0 and requests[(AGENT, "v12")] == 0  # the deployment's
    assert requests[("research-agent", "v7")] > 0 and requests[("research-agent", "v8")] > 0


def test_a_router_that_cannot_reach_kafka_falls_back_to_the_default_version(
    kafka_settings: Settings,
) -> None:
    nobody = replace(
        kafka_settings,
        kafka_bootstrap=f"127.0.0.1:{localkafka.free_loopback_port()}",
        sdk_router_startup_wait_s=0.5,
    )
    with Router(nobody) as router:
        route = router.route(AGENT, "user-1", "v7")
        again = router.route(AGENT, "user-2", "v7")
        stats = router.stats
    assert (route.version, route.fallback, route.bundle) == ("v7", True, None)
    assert again.version == "v7"
    assert not stats.ready and stats.fallbacks == 2


def test_an_agent_without_deployment_gets_its_default_with_the_registered_bundle(
    kafka_settings: Settings,
) -> None:
    settings = fresh(kafka_settings)
    (v7,) = register(settings, "v7")
    with Router(settings) as router:
        assert router.wait_ready(SEEN_TIMEOUT_S)
        route = router.route(AGENT, "user-1", "v7")
    assert route.fallback and route.bundle == v7.bundle and route.digest == v7.digest


def test_a_router_started_before_the_topics_exist_follows_them_once_they_do(
    kafka_settings: Settings,
) -> None:
    settings = replace(kafka_settings, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    with Router(settings) as router:
        assert router.wait_ready(SEEN_TIMEOUT_S)  # no topics yet: nothing to read, ready
        assert router.route(AGENT, "user-1", "v0").fallback
        ensure_topics(settings)
        (v1,) = register(settings, "v1")
        apply_deployment(
            settings,
            rollout_state(v1, None, weight=0, rollout_id="d", generation=1, phase=Phase.IDLE),
        )
        assert wait_until(lambda: generation_of(router) == 1, timeout_s=60)
        route = router.route(AGENT, "user-1", "v0")
    assert (route.version, route.bundle) == ("v1", v1.bundle)


def test_a_router_keeps_the_last_state_while_the_broker_is_down_and_follows_it_after(
    own_broker: Settings, tmp_path: Path
) -> None:
    settings = fresh(own_broker)
    v1, v2 = register(settings, "v1", "v2")
    apply_deployment(settings, rollout_state(v1, v2, weight=0.5, rollout_id="d", generation=3))
    keys = [f"user-{i}" for i in range(1000)]
    with Router(settings) as router:
        assert router.wait_ready(SEEN_TIMEOUT_S)
        before = [router.route(AGENT, key, "v0") for key in keys]
        localkafka.down(settings)
        during = [router.route(AGENT, key, "v0") for key in keys]
        localkafka.up(settings, detach=False)
        apply_deployment(settings, rollout_state(v1, v2, weight=1.0, rollout_id="d", generation=4))
        changed = wait_until(lambda: generation_of(router) == 4, timeout_s=60)
        after = [router.route(AGENT, key, "v0") for key in keys]
    assert during == before and {r.generation for r in during} == {3}
    assert router.stats.fallbacks == 0
    assert changed and {r.version for r in after} == {"v2"}
