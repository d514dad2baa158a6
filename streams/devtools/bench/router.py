"""``coalmine bench router``: what a route costs, and how fast a deployment change reaches
every router.

* **cost**: ``route()`` per call in µs over a list of keys, next to a plain ``dict.get`` of the
  same keys in the same run: with a canary serving (one hash per call), with the stable
  version only (no hash), and for an agent with no deployment (the fallback path). Beside
  them, the hashes a router could use: cost per call, and how independent two rollouts'
  canaries are (at weight 0.5 independent halves share a quarter of the keys; ``crc32``
  shares none or all of them, being linear).
* **propagation of a rollback**: ``routers`` routers in each of ``processes`` probe processes
  (:mod:`streams.devtools.router_probe`) follow one agent, whose deployments a
  ``coalmine controller`` (started here, a child process) writes. ``rollbacks`` times over:
  a ``deploy`` command through the controller puts a 10% canary up and every router is waited
  for (not measured); then a RollbackCommand is produced on ``coalmine.rollbacks``. Measured:
  from just before that record is produced to the moment the *last* router applied the
  rolled-back state (``time.time()`` in every process, one machine) — the broker's write, the
  controller's read, decision, acked state record, and every router's read of it. Printed as
  p50 / p99 / max over the rollbacks.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.command import CommandAction
from schemas.plan import RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from schemas.topics import ROLLBACKS
from streams.devtools.bench import bench_topics, percentiles, say
from streams.devtools.control_records import ControlWriter, example_version, rollout_state
from streams.devtools.controller_process import ControllerProcess
from streams.devtools.loop import command
from streams.devtools.router_probe import RouterProbe
from streams.errors import CoalmineError
from streams.sdk.compacted import Record
from streams.sdk.router import BUCKETS, RoutingTable, bucket, rollout_hasher, rollout_salt
from streams.settings import Settings

AGENT = "bench-bot"
COST_KEYS = 200_000
SEEN_TIMEOUT_S = 30.0
PAUSE_BEFORE_ROLLBACK_S = 0.2
STABLE, CANARY = "v1", "v2"
HELD_CANARY = RolloutPlan(steps=(RolloutStep(weight=0.1, min_duration_s=3600),))


def run(
    settings: Settings,
    *,
    rollbacks: int = 50,
    processes: int = 4,
    routers: int = 5,
    fetch_wait_ms: int | None = None,
) -> int:
    say("route() cost, µs per call (same run, same keys):")
    for name, micros in measure_cost():
        say(f"  {name:<50}{micros:>8.3f}")
    say("hash candidates: µs per call, and keys in both of two rollouts' 50% canaries:")
    for name, micros, overlap in measure_hashes():
        say(f"  {name:<50}{micros:>8.3f}   overlap {overlap:.3f} (independent: 0.250)")
    if fetch_wait_ms is not None:
        settings = replace(settings, sdk_router_fetch_wait_ms=fetch_wait_ms)
    with ExitStack() as cleanup:
        settings = bench_topics(settings, cleanup, "bench-router")
        logs = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-router-")))
        cleanup.enter_context(ControllerProcess(settings, logs / "controller.log"))
        cycle = RollbackCycle(settings, cleanup.enter_context(ControlWriter(settings)))
        say(
            f"propagation of a RollbackCommand: {processes} processes x {routers} routers, "
            f"{rollbacks} rollbacks, fetch.wait.max.ms={settings.sdk_router_fetch_wait_ms}"
        )
        probes = [
            cleanup.enter_context(RouterProbe(settings, AGENT, routers=routers))
            for _ in range(processes)
        ]
        if not all(ready for probe in probes for ready in probe.ready):
            raise CoalmineError("a router did not get ready")
        latencies = measure_propagation(probes, cycle, rollbacks)
    slowest = [max(per_router) for per_router in latencies]
    every = [t for per_router in latencies for t in per_router]
    say(f"  produced -> last router serving stable, ms: {percentiles(slowest)}")
    say(f"  produced -> each router, ms:                 {percentiles(every)}")
    return 0


# --------------------------------------------------------------------------- cost


def _timed_per_call(work: Callable[[], None], calls: int) -> float:
    best = float("inf")
    for _ in range(3):  # best of three: a busy neighbour slows some runs, never speeds one
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best / calls * 1e6


def _table_with(weight: float) -> RoutingTable:
    v1, v2 = example_version(AGENT, "v1"), example_version(AGENT, "v2")
    state = rollout_state(v1, v2, weight=weight, rollout_id="bench", generation=2)
    table = RoutingTable(deployments_topic="d", versions_topic="v", startup_wait_s=0)
    table.apply(
        [Record("v", v.key.encode(), v.model_dump_json().encode()) for v in (v1, v2)]
        + [Record("d", AGENT.encode(), state.model_dump_json().encode())]
    )
    table.mark_ready()
    return table


def measure_cost(calls: int = COST_KEYS) -> list[tuple[str, float]]:
    keys = [f"user-{i}" for i in range(calls)]
    plain = dict.fromkeys(keys, "v1")
    canary, stable, empty = _table_with(0.25), _table_with(0.0), _table_with(0.0)
    empty.apply([Record("d", AGENT.encode(), None)])
    # The fallback's warning (once per ten seconds) is part of its cost, not of the output.
    logging.getLogger("coalmine.sdk.router").setLevel(logging.ERROR)

    def lookups() -> None:
        get = plain.get
        for key in keys:
            get(key)

    def routes(table: RoutingTable) -> Callable[[], None]:
        def work() -> None:
            route = table.route
            for key in keys:
                route(AGENT, key, "v0")

        return work

    return [
        ("dict.get (baseline)", _timed_per_call(lookups, calls)),
        ("route(), a 25% canary serving (one hash)", _timed_per_call(routes(canary), calls)),
        ("route(), stable only (no hash)", _timed_per_call(routes(stable), calls)),
        ("route(), no deployment (fallback, logged)", _timed_per_call(routes(empty), calls)),
    ]


def _blake2b_anew(rollout: str) -> Callable[[str], int]:
    salt = rollout_salt(rollout)
    return lambda key: int.from_bytes(
        hashlib.blake2b(salt + key.encode(), digest_size=8).digest(), "big"
    )


def _sha256(rollout: str) -> Callable[[str], int]:
    salt = rollout_salt(rollout)
    return lambda key: int.from_bytes(hashlib.sha256(salt + key.encode()).digest()[:8], "big")


def _crc32(rollout: str) -> Callable[[str], int]:
    start = zlib.crc32(rollout_salt(rollout))
    return lambda key: zlib.crc32(key.encode(), start) << 32


def _blake2b(rollout: str) -> Callable[[str], int]:
    hasher = rollout_hasher(rollout)
    return lambda key: bucket(hasher, key)


HASHES: dict[str, Callable[[str], Callable[[str], int]]] = {
    "blake2b, salt hashed once, copied (the router's)": _blake2b,
    "blake2b(salt + key) hashed anew per key": _blake2b_anew,
    "sha256(salt + key), first 8 bytes": _sha256,
    "zlib.crc32(key, crc32(salt))": _crc32,
}


def measure_hashes(calls: int = 100_000) -> list[tuple[str, float, float]]:
    keys = [f"user-{i}" for i in range(calls)]
    rows = []
    for name, make in HASHES.items():
        first, second = make("rollout-a"), make("rollout-b")

        def work(hashed: Callable[[str], int] = first) -> None:
            for key in keys:
                hashed(key)

        half = BUCKETS // 2
        both = sum(first(k) < half and second(k) < half for k in keys)
        rows.append((name, _timed_per_call(work, calls), both / calls))
    return rows


# --------------------------------------------------------------------------- propagation


class RollbackCycle:
    """The agent's deployments, through the controller: :meth:`canary` deploys a 10% canary
    (held: its step lasts an hour), :meth:`roll_back` produces a RollbackCommand of it. Each
    returns the generation the routers must reach; the controller is the agent's only
    writer, so a rollback makes the next generation."""

    def __init__(self, settings: Settings, writer: ControlWriter) -> None:
        self._settings = settings
        self._writer = writer
        for label in (STABLE, CANARY):
            self._writer.version(example_version(AGENT, label))
        self._writer.flush()
        self._generation = self._command(CommandAction.DEPLOY, version=STABLE)  # stable at once

    def canary(self) -> int:
        self._generation = self._command(CommandAction.DEPLOY, version=CANARY, plan=HELD_CANARY)
        return self._generation

    def roll_back(self) -> int:
        request = RollbackCommand(
            id=f"bench-{uuid.uuid4().hex}",
            time=datetime.now(UTC),
            agent=AGENT,
            from_version=CANARY,
            reason="benchmark",
            issued_by="bench",
        )
        self._writer.record(ROLLBACKS, AGENT, request)
        self._writer.flush()
        self._generation += 1
        return self._generation

    def _command(self, action: CommandAction, **fields: Any) -> int:
        return command(self._settings, AGENT, action, **fields).generation


def measure_propagation(
    probes: Sequence[RouterProbe], cycle: RollbackCycle, rollbacks: int
) -> list[list[float]]:
    """Per rollback, the milliseconds until each router had applied it."""
    latencies = []
    for _ in range(rollbacks):
        _await(probes, cycle.canary())
        time.sleep(PAUSE_BEFORE_ROLLBACK_S)
        began = time.time()
        seen = _await(probes, cycle.roll_back())
        latencies.append([(t - began) * 1000 for t in seen])
    return latencies


def _await(probes: Sequence[RouterProbe], generation: int) -> list[float]:
    """When each router first had ``generation`` (wall clock)."""
    seen = [
        t
        for probe in probes
        for t in probe.ask(op="await", generation=generation, timeout=SEEN_TIMEOUT_S)["seen"]
    ]
    if None in seen:
        raise CoalmineError(f"a router did not see generation {generation} within 30 s")
    return seen
