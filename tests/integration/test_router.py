"""SDK routers on a real broker: a three-step rollout seen by routers in two other processes,
a rollback, the fallback before any state, and a broker outage that the last state outlives."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from schemas.deployment import DeploymentState, Phase
from schemas.topics import TRACES
from schemas.version import AgentVersion
from streams.devtools import generate, localkafka
from streams.devtools.control_records import ControlWriter, example_version, rollout_state
from streams.devtools.router_probe import RouterProbe
from streams.sdk.router import Router
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import consume_all

AGENT = "support-bot"
KEYS = 10_000
SIGMAS = 5.0
SEEN_TIMEOUT_S = 30.0


def apply_deployment(settings: Settings, state: DeploymentState) -> None:
    """Make ``state`` the agent's deployment state. The one place these tests change a
    deployment: produced by hand until the controller (its single writer) takes commands."""
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


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def within_binomial_bounds(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


def test_a_three_step_rollout_reaches_routers_in_two_processes_and_a_rollback_ends_it(
    kafka_settings: Settings,
) -> None:
    settings = fresh(kafka_settings)
    v1, v2 = register(settings, "v1", "v2")
    apply_deployment(
        settings,
        rollout_state(v1, None, weight=0, rollout_id="first", generation=1, phase=Phase.IDLE),
    )
    with RouterProbe(settings, AGENT, routers=2) as one, RouterProbe(settings, AGENT) as two:
        assert one.ready == [True, True] and two.ready == [True]
        previous: set[int] = set()
        for generation, weight in ((2, 0.05), (3, 0.25), (4, 0.5)):
            apply_deployment(
                settings,
                rollout_state(v1, v2, weight=weight, rollout_id="deploy-2", generation=generation),
            )
            answers = []
            for probe in (one, two):
                seen = probe.ask(op="await", generation=generation, timeout=SEEN_TIMEOUT_S)["seen"]
                assert None not in seen, f"a router did not see generation {generation}"
                answers.append(probe.ask(op="route", keys=KEYS, default="v0"))
            first, second = answers
            assert first["agree"] and second["agree"]  # the routers within a process
            assert first["canary"] == second["canary"]  # and across processes
            canary = set(first["canary"])
            assert within_binomial_bounds(len(canary), KEYS, weight), (len(canary), weight)
            assert previous <= canary, "a key moved back from canary to stable"
            assert first["generations"] == [generation]
            assert first["bundles"] == KEYS  # every route came with its version's bundle
            assert first["versions"] == {"v2": len(canary), "v1": KEYS - len(canary)}
            previous = canary

        apply_deployment(
            settings,
            rollout_state(
                v1, v2, weight=0, rollout_id="deploy-2", generation=5, phase=Phase.ROLLED_BACK
            ),
        )
        for probe in (one, two):
            assert None not in probe.ask(op="await", generation=5, timeout=SEEN_TIMEOUT_S)["seen"]
            after = probe.ask(op="route", keys=KEYS, default="v0")
            assert after["versions"] == {"v1": KEYS} and after["canary"] == []


def test_generate_sends_an_agents_traffic_to_the_versions_its_deployment_names(
    kafka_settings: Settings,
) -> None:
    settings = fresh(kafka_settings)
    v12, v13 = register(settings, "v12", "v13")
    apply_deployment(settings, rollout_state(v12, v13, weight=1.0, rollout_id="d", generation=2))
    plan = generate.TrafficPlan(rate=2000.0, duration_s=None, requests=200, canary_share=0.5)
    reports: list[generate.GeneratorProgress] = []
    assert generate.run(settings, plan, progress=reports.append) == 0

    spans = consume_all(settings, settings.topic(TRACES), expected=reports[-1].delivered)
    requests = Counter(
        (event["agent"], event["version"])
        for event in (json.loads(m.value() or b"") for m in spans)
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
