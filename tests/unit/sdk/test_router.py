"""The router's pure parts: buckets, thresholds, compiled routes, snapshots, fallbacks; and
Hypothesis properties of stickiness, monotonicity and reshuffling."""

from __future__ import annotations

import logging
import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.deployment import DeploymentState, Phase
from schemas.version import AgentVersion
from streams.devtools.control_records import example_version, rollout_state
from streams.sdk.compacted import Record
from streams.sdk.router import (
    BUCKETS,
    RoutingTable,
    Snapshot,
    apply_records,
    bucket,
    canary_threshold,
    compile_routes,
    rollout_hasher,
    rollout_salt,
)

DEPLOYMENTS, VERSIONS = "c.deployments", "c.versions"
V1, V2 = example_version("bot", "v1"), example_version("bot", "v2")
weights = st.floats(min_value=0, max_value=1, allow_nan=False)
keys = st.text(min_size=0, max_size=40)


def state_record(state: DeploymentState) -> Record:
    return Record(DEPLOYMENTS, state.agent.encode(), state.model_dump_json().encode())


def version_record(version: AgentVersion) -> Record:
    return Record(VERSIONS, version.key.encode(), version.model_dump_json().encode())


def canary_at(weight: float, rollout_id: str = "r1", generation: int = 2) -> DeploymentState:
    return rollout_state(V1, V2, weight=weight, rollout_id=rollout_id, generation=generation)


def table(*records: Record, startup_wait_s: float = 0.0) -> RoutingTable:
    routing = RoutingTable(
        deployments_topic=DEPLOYMENTS, versions_topic=VERSIONS, startup_wait_s=startup_wait_s
    )
    routing.apply(records)
    return routing


def canary_keys(state: DeploymentState, key_set: set[str]) -> set[str]:
    routes = compile_routes(state, {})
    return {k for k in key_set if (chosen := routes.choose(k)) is not None and chosen.canary}


# --------------------------------------------------------------------------- buckets


def test_thresholds_cover_nothing_at_zero_everything_at_one() -> None:
    assert canary_threshold(0.0) == 0
    assert canary_threshold(1.0) == BUCKETS
    assert canary_threshold(0.5) == BUCKETS // 2


def test_salts_do_not_let_two_pairs_collide() -> None:
    # "ab" + "c" must not hash like "a" + "bc".
    assert rollout_salt("ab") + b"c" != rollout_salt("a") + b"bc"
    assert bucket(rollout_hasher("ab"), "c") != bucket(rollout_hasher("a"), "bc")


def test_buckets_are_uniform_enough_for_binomial_checks() -> None:
    n, rollout = 20_000, rollout_hasher("deploy-1")
    deciles = [0] * 10
    for i in range(n):
        deciles[bucket(rollout, f"user-{i}") * 10 // BUCKETS] += 1
    chi2 = sum((c - n / 10) ** 2 / (n / 10) for c in deciles)
    assert chi2 < 27.9  # the 0.999 quantile of chi-square with 9 degrees of freedom


def test_a_surrogate_in_a_key_is_hashed_not_refused() -> None:
    assert 0 <= bucket(rollout_hasher("r"), "\ud800") < BUCKETS


# --------------------------------------------------------------------------- properties


@given(st.sets(keys, max_size=60), weights, weights, st.text(max_size=20))
def test_as_the_weight_grows_keys_only_move_to_the_canary(
    key_set: set[str], w1: float, w2: float, rollout_id: str
) -> None:
    low, high = sorted((w1, w2))
    before = canary_keys(canary_at(low, rollout_id), key_set)
    after = canary_keys(canary_at(high, rollout_id), key_set)
    assert before <= after


@given(keys, weights, st.text(max_size=20))
def test_the_same_key_gets_the_same_answer(key: str, weight: float, rollout_id: str) -> None:
    routing = table(
        version_record(V1), version_record(V2), state_record(canary_at(weight, rollout_id))
    )
    again = table(
        version_record(V1), version_record(V2), state_record(canary_at(weight, rollout_id))
    )
    assert routing.route("bot", key, "v0") == routing.route("bot", key, "v0")
    assert routing.route("bot", key, "v0") == again.route("bot", key, "v0")


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_another_rollout_draws_its_canary_independently(first: str, second: str) -> None:
    if first == second:
        return
    key_set = {f"user-{i}" for i in range(4000)}
    a = canary_keys(canary_at(0.5, first), key_set)
    b = canary_keys(canary_at(0.5, second), key_set)
    # Independent halves overlap on a quarter of the keys (sd = sqrt(4000 * 3/16) ≈ 27).
    assert abs(len(a & b) - 1000) <= 5 * math.sqrt(4000 * 3 / 16)


def test_a_weight_puts_its_share_of_keys_on_the_canary() -> None:
    key_set = {f"user-{i}" for i in range(10_000)}
    for weight in (0.01, 0.05, 0.25, 0.5, 0.9):
        hits = len(canary_keys(canary_at(weight), key_set))
        assert abs(hits - 10_000 * weight) <= 5 * math.sqrt(10_000 * weight * (1 - weight))


# --------------------------------------------------------------------------- compiling


def test_a_silent_phase_serves_only_the_stable_version_whatever_the_weight() -> None:
    for phase in (Phase.ROLLED_BACK, Phase.GATED, Phase.PROMOTED, Phase.IDLE):
        state = rollout_state(V1, V2, weight=0.5, rollout_id="r", generation=3, phase=phase)
        assert compile_routes(state, {}).threshold == 0


def test_a_paused_canary_keeps_its_share() -> None:
    state = rollout_state(V1, V2, weight=0.5, rollout_id="r", generation=3, phase=Phase.PAUSED)
    assert compile_routes(state, {}).threshold == BUCKETS // 2


def test_routes_carry_the_bundle_only_when_the_digest_matches() -> None:
    other = example_version("bot", "v9")
    impostor = AgentVersion(**{**V2.model_dump(), "bundle": other.bundle, "digest": other.digest})
    routes = compile_routes(canary_at(1.0), {V1.key: V1, V2.key: impostor})
    assert routes.stable is not None and routes.stable.bundle == V1.bundle
    assert routes.canary is not None and routes.canary.bundle is None


# --------------------------------------------------------------------------- snapshots


def test_records_build_a_new_snapshot_and_leave_the_old_one_alone() -> None:
    empty = Snapshot()
    after, problems = apply_records(
        empty,
        [version_record(V1), version_record(V2), state_record(canary_at(0.25))],
        deployments_topic=DEPLOYMENTS,
        versions_topic=VERSIONS,
    )
    assert problems == [] and not empty.routes and not empty.versions
    assert after.routes["bot"].state.canary_weight == 0.25
    assert set(after.versions) == {"bot/v1", "bot/v2"}


def test_a_state_read_before_its_bundle_gets_the_bundle_when_it_arrives() -> None:
    routing = table(state_record(canary_at(0.0)))
    assert routing.route("bot", "k", "v0").bundle is None
    assert routing.stats.missing_bundles == 1
    routing.apply([version_record(V1)])
    assert routing.route("bot", "k", "v0").bundle == V1.bundle


def test_a_tombstone_removes_the_agent_and_its_routes_fall_back() -> None:
    routing = table(state_record(canary_at(0.5)))
    routing.mark_ready()
    routing.apply([Record(DEPLOYMENTS, b"bot", None)])
    route = routing.route("bot", "k", "v0")
    assert route.fallback and route.version == "v0"


def test_bad_records_are_skipped_counted_and_the_rest_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_key = Record(DEPLOYMENTS, b"other-bot", canary_at(0.5).model_dump_json().encode())
    with caplog.at_level(logging.WARNING, "coalmine.sdk.router"):
        routing = table(
            Record(DEPLOYMENTS, b"bot", b"{not json"), wrong_key, state_record(canary_at(0.1))
        )
    assert routing.stats.invalid_records == 2
    assert getattr(routing.deployment("bot"), "canary_weight", None) == 0.1
    assert routing.deployment("other-bot") is None
    assert "skipped" in caplog.text


def test_only_the_named_agents_are_kept() -> None:
    routing = RoutingTable(deployments_topic=DEPLOYMENTS, versions_topic=VERSIONS, agents=["x"])
    routing.apply([state_record(canary_at(0.5)), version_record(V1)])
    assert routing.deployment("bot") is None and routing.version("bot", "v1") is None


# --------------------------------------------------------------------------- fallbacks


def test_before_any_state_a_route_falls_back_after_the_startup_wait_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routing = RoutingTable(
        deployments_topic=DEPLOYMENTS, versions_topic=VERSIONS, startup_wait_s=0.05
    )
    with caplog.at_level(logging.WARNING, "coalmine.sdk.router"):
        first = routing.route("bot", "k", "v7")
        second = routing.route("bot", "k", "v7")
    assert (first.version, first.generation, first.fallback) == ("v7", None, True)
    assert second.version == "v7"
    assert routing.stats.fallbacks == 2 and not routing.stats.ready
    assert caplog.text.count("serving its default version") == 1  # rate-limited


def test_a_route_waiting_for_the_first_state_gets_it_when_it_arrives() -> None:
    routing = RoutingTable(
        deployments_topic=DEPLOYMENTS, versions_topic=VERSIONS, startup_wait_s=60.0
    )

    def reader() -> None:
        routing.apply([version_record(V1), state_record(canary_at(0.0))])
        routing.mark_ready()

    threading.Timer(0.05, reader).start()
    route = routing.route("bot", "k", "v7")
    assert (route.version, route.generation) == ("v1", 2)
    assert routing.stats.fallbacks == 0


def test_listeners_hear_every_change() -> None:
    routing = table()
    heard: list[int | None] = []
    routing.add_listener(
        lambda: heard.append(getattr(routing.deployment("bot"), "generation", None))
    )
    routing.apply([state_record(canary_at(0.1, generation=2))])
    routing.apply([state_record(canary_at(0.2, generation=3))])
    assert heard == [2, 3]


def test_a_route_during_the_first_read_waits_for_its_end_not_for_a_state_half_way() -> None:
    routing = RoutingTable(
        deployments_topic=DEPLOYMENTS, versions_topic=VERSIONS, startup_wait_s=60.0
    )
    routing.apply([state_record(canary_at(1.0, generation=2))])  # a canary, rolled back later

    def rest_of_the_history() -> None:
        rolled_back = rollout_state(
            V1, V2, weight=0.0, rollout_id="r1", generation=3, phase=Phase.ROLLED_BACK
        )
        routing.apply([state_record(rolled_back)])
        routing.mark_ready()

    threading.Timer(0.05, rest_of_the_history).start()
    route = routing.route("bot", "k", "v0")
    assert (route.version, route.generation) == ("v1", 3)
