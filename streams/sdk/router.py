"""Which version serves a request: the :class:`Router`.

A router follows ``coalmine.deployments`` (who gets each agent's traffic) and
``coalmine.versions`` (what each version is) in a background thread and answers
:meth:`RoutingTable.route` from memory: a dictionary lookup and, while a canary serves, one
hash of the routing key; never a network call.

* **Sticky and monotone.** A key's bucket is ``blake2b(rollout_id, key)`` read as a number in
  [0, 2^64); the key is on the canary when its bucket is below ``canary_weight * 2^64``. The
  same key gets the same answer for as long as the deployment is the same; as the weight of one
  rollout grows, keys only move from stable to canary; a new deployment (another
  ``rollout_id``) draws its canary afresh, so one unlucky set of users is not every canary's.
* **One router for every agent of a process.** Both topics have one partition that holds every
  agent, so a router per agent would read the same records once per agent; one router reads
  them once. ``agents=`` keeps only the named agents' states and bundles in memory.
* **Never in the way.** Before its first read to the end of both topics, the first routes wait
  up to ``COALMINE_SDK_ROUTER_STARTUP_WAIT_S`` in total, then fall back to the caller's default
  version (counted, logged at most every ten seconds), as does an agent with no deployment.
  During a broker outage the last state read keeps serving.
* **Lock-free reads.** The reader thread builds a new immutable :class:`Snapshot` per batch of
  records and swaps one reference; ``route`` reads that reference once and never locks (it
  takes a lock only to count a fallback or a missing bundle).

A version whose bundle has not been read (a deployment that names a version the router has not
seen on ``coalmine.versions``, or another digest than the one registered) is served with
``bundle=None`` and counted in :attr:`RouterStats.missing_bundles`: waiting for it would stall
the agent, and its version label is still right for the spans.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from pydantic import ValidationError

from schemas.deployment import DeploymentState, Phase
from schemas.topics import DEPLOYMENTS, VERSIONS
from schemas.version import AgentBundle, AgentVersion
from streams.logs import RateLimitedLog
from streams.sdk.closing import ClosedOnExit
from streams.sdk.compacted import Record
from streams.sdk.follow import TopicFollower
from streams.sdk.settings import SdkSettings

logger = logging.getLogger("coalmine.sdk.router")

BUCKETS: Final = 2**64
"""Keys hash into [0, BUCKETS); a weight w puts the buckets below w * BUCKETS on the canary."""
SILENT_PHASES: Final = frozenset({Phase.IDLE, Phase.GATED, Phase.ROLLED_BACK, Phase.PROMOTED})
"""Phases in which a canary gets no traffic whatever its weight says."""


# --------------------------------------------------------------------------- pure parts


def rollout_salt(rollout_id: str) -> bytes:
    """What a rollout's buckets are hashed with: its id, length-prefixed so that no
    (rollout, key) pair reads the same as another."""
    raw = rollout_id.encode()
    return len(raw).to_bytes(4, "big") + raw


def rollout_hasher(rollout_id: str) -> hashlib.blake2b:
    """blake2b (8 bytes) that has hashed the rollout's salt: :func:`bucket` copies it per key,
    cheaper than hashing salt and key anew (0.45 against 0.6-0.9 µs, ``coalmine bench
    router``) and the same value."""
    return hashlib.blake2b(rollout_salt(rollout_id), digest_size=8)


def bucket(rollout: hashlib.blake2b, key: str) -> int:
    """A key's place in [0, BUCKETS) in one rollout, ``blake2b(salt + key)``: uniform, and
    independent between rollouts (``zlib.crc32`` is faster but linear: two rollouts' buckets
    differ by a fixed XOR, so at weight 0.5 a new rollout keeps the same canary or its exact
    complement). ``rollout`` is only copied, so threads may share it."""
    hasher = rollout.copy()
    hasher.update(key.encode(errors="surrogatepass"))
    return int.from_bytes(hasher.digest(), "big")


def canary_threshold(weight: float) -> int:
    """Buckets below this serve the canary: 0 for weight 0, all of them for 1; monotone."""
    return min(BUCKETS, max(0, int(weight * BUCKETS)))


@dataclass(frozen=True, slots=True)
class Route:
    """The answer to one request: which version serves it and what that version is."""

    agent: str
    version: str
    digest: str | None
    bundle: AgentBundle | None
    """The prompts, model and tools to act with; None when the router has not read it."""
    generation: int | None
    """The deployment state's generation; None when this is the caller's default version."""
    canary: bool = False

    @property
    def fallback(self) -> bool:
        return self.generation is None


@dataclass(frozen=True, slots=True)
class AgentRoutes:
    """One agent's deployment state compiled for routing: both answers built in advance."""

    state: DeploymentState
    stable: Route | None
    canary: Route | None
    threshold: int
    rollout: hashlib.blake2b

    def choose(self, key: str) -> Route | None:
        if self.threshold and bucket(self.rollout, key) < self.threshold:
            return self.canary
        return self.stable


def compile_routes(state: DeploymentState, versions: Mapping[str, AgentVersion]) -> AgentRoutes:
    """``state`` as :class:`AgentRoutes`, with the bundles of ``versions`` (by ``agent/version``
    key) whose digest is the one the state names."""

    def route(version: str | None, digest: str | None, canary: bool) -> Route | None:
        if version is None:
            return None
        known = versions.get(f"{state.agent}/{version}")
        bundle = known.bundle if known is not None and known.digest == digest else None
        return Route(state.agent, version, digest, bundle, state.generation, canary)

    canary = route(state.canary_version, state.canary_digest, True)
    weight = 0.0 if canary is None or state.phase in SILENT_PHASES else state.canary_weight
    return AgentRoutes(
        state=state,
        stable=route(state.stable_version, state.stable_digest, False),
        canary=canary,
        threshold=canary_threshold(weight),
        rollout=rollout_hasher(state.rollout_id or ""),
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything a router knows at one moment; never changed, only replaced."""

    routes: Mapping[str, AgentRoutes] = field(default_factory=dict)
    """Agent → its compiled deployment state."""
    versions: Mapping[str, AgentVersion] = field(default_factory=dict)
    """``agent/version`` → the version read from ``coalmine.versions``."""
    invalid_records: int = 0


def apply_records(
    snapshot: Snapshot,
    records: Iterable[Record],
    *,
    deployments_topic: str,
    versions_topic: str,
    agents: frozenset[str] | None = None,
) -> tuple[Snapshot, list[str]]:
    """The snapshot after ``records`` (a tombstone deletes its key), and a line per record
    that could not be read. Only ``agents`` are kept when given."""
    states = {agent: r.state for agent, r in snapshot.routes.items()}
    versions = dict(snapshot.versions)
    problems: list[str] = []
    for record in records:
        key = (record.key or b"").decode(errors="replace")
        agent = key if record.topic == deployments_topic else key.partition("/")[0]
        if agents is not None and agent not in agents:
            continue
        try:
            if record.topic == deployments_topic:
                _apply(states, key, record.value, DeploymentState)
            elif record.topic == versions_topic:
                _apply(versions, key, record.value, AgentVersion)
        except (ValidationError, ValueError) as exc:
            problems.append(f"{record.topic} record {key!r} skipped: {_first_line(exc)}")
    # A version that arrived may be the bundle of a state read before it: then recompile all.
    recompile_all = versions != snapshot.versions
    routes = {}
    for agent, state in states.items():
        known = snapshot.routes.get(agent)
        unchanged = known is not None and known.state == state and not recompile_all
        routes[agent] = (
            known if unchanged and known is not None else compile_routes(state, versions)
        )
    return (
        Snapshot(
            MappingProxyType(routes),
            MappingProxyType(versions),
            snapshot.invalid_records + len(problems),
        ),
        problems,
    )


_Keyed = TypeVar("_Keyed", DeploymentState, AgentVersion)


def _apply(store: dict[str, _Keyed], key: str, value: bytes | None, model: type[_Keyed]) -> None:
    """Put the record's value in ``store`` (a tombstone deletes the key); the key must be
    the one the value's own fields give (``agent``, ``agent/version``)."""
    if value is None:
        store.pop(key, None)
        return
    parsed = model.model_validate_json(value)
    own_key = parsed.agent if isinstance(parsed, DeploymentState) else parsed.key
    if own_key != key:
        raise ValueError(f"the key is not the value's own {own_key!r}")
    store[key] = parsed


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(map(str, error['loc'])) or 'value'}: {error['msg']}"
    return str(exc).splitlines()[0]


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class RouterStats:
    ready: bool
    """The router has read both topics to their end at least once."""
    fallbacks: int
    """Routes answered with the caller's default version (no state yet, or none for the agent)."""
    missing_bundles: int
    """Routes answered without a bundle (the version's record not read)."""
    invalid_records: int
    agents: int


class RoutingTable:
    """Answers routes from the latest :class:`Snapshot`; :meth:`apply` swaps in the next one.

    The part of :class:`Router` without Kafka: unit tests and simulations feed it records.
    ``startup_wait_s`` bounds how long routes wait, in total from creation, for
    :meth:`mark_ready` before they fall back; ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        deployments_topic: str,
        versions_topic: str,
        agents: Iterable[str] | None = None,
        startup_wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = Snapshot()
        self._topics = (deployments_topic, versions_topic)
        self._agents = None if agents is None else frozenset(agents)
        self._clock = clock
        self._ready_by = clock() + startup_wait_s
        self._ready = threading.Event()
        self._lock = threading.Lock()  # counters and listeners only; never on the way of a route
        self._fallbacks = 0
        self._missing_bundles = 0
        self._listeners: list[Callable[[], None]] = []
        self._warn_fallback = RateLimitedLog(logger, logging.WARNING)
        self._warn_bundle = RateLimitedLog(logger, logging.WARNING)
        self._warn_record = RateLimitedLog(logger, logging.WARNING)

    # -- reading (any thread) --

    def route(self, agent: str, key: str, default: str) -> Route:
        """The version that serves ``agent``'s request with routing ``key`` (a user or session
        id); ``default`` when the agent has no deployment (or none has been read in time).

        Until the topics have been read to their end, a route waits (within the startup wait):
        a state half-way through the history may be a canary rolled back since."""
        if not self._ready.is_set():
            self._wait_for_first_state()
        routes = self._snapshot.routes.get(agent)
        chosen = None if routes is None else routes.choose(key)
        if chosen is None:
            return self._fallback(agent, default)
        if chosen.bundle is None:
            self._count_missing_bundle(chosen)
        return chosen

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until both topics have been read to their end once (up to ``timeout``
        seconds; default: what is left of the startup wait). True if so."""
        if timeout is None:
            timeout = max(0.0, self._ready_by - self._clock())
        return self._ready.wait(timeout)

    def deployment(self, agent: str) -> DeploymentState | None:
        routes = self._snapshot.routes.get(agent)
        return None if routes is None else routes.state

    def version(self, agent: str, version: str) -> AgentVersion | None:
        return self._snapshot.versions.get(f"{agent}/{version}")

    @property
    def stats(self) -> RouterStats:
        snapshot = self._snapshot
        with self._lock:
            return RouterStats(
                ready=self._ready.is_set(),
                fallbacks=self._fallbacks,
                missing_bundles=self._missing_bundles,
                invalid_records=snapshot.invalid_records,
                agents=len(snapshot.routes),
            )

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of state (from the reader thread; it must
        be quick and must not raise)."""
        with self._lock:
            self._listeners.append(listener)

    # -- writing (the reader thread) --

    def apply(self, records: Iterable[Record]) -> None:
        deployments_topic, versions_topic = self._topics
        snapshot, problems = apply_records(
            self._snapshot,
            records,
            deployments_topic=deployments_topic,
            versions_topic=versions_topic,
            agents=self._agents,
        )
        for problem in problems:
            self._warn_record("%s", problem)
        self._snapshot = snapshot  # the swap: one reference, read by route() without a lock
        self._notify()

    def mark_ready(self) -> None:
        self._ready.set()
        self._notify()

    # -- internals --

    def _wait_for_first_state(self) -> None:
        remaining = self._ready_by - self._clock()
        if remaining > 0:
            self._ready.wait(remaining)

    def _fallback(self, agent: str, default: str) -> Route:
        with self._lock:
            self._fallbacks += 1
        why = "has no deployment" if self._ready.is_set() else "has no deployment read yet"
        self._warn_fallback("agent %r %s: serving its default version %r", agent, why, default)
        known = self.version(agent, default)
        if known is None:
            return Route(agent, default, None, None, None)
        return Route(agent, default, known.digest, known.bundle, None)

    def _count_missing_bundle(self, route: Route) -> None:
        with self._lock:
            self._missing_bundles += 1
        self._warn_bundle(
            "version %r of %r has not been read from the versions topic: serving it without "
            "its bundle",
            route.version,
            route.agent,
        )

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


# --------------------------------------------------------------------------- the router


class Router(RoutingTable, ClosedOnExit):
    """A :class:`RoutingTable` that follows the deployments and versions topics of
    ``settings`` in a daemon thread, from their beginning. Close it (or use it as a context
    manager) to stop the thread::

        with Router(SdkSettings.from_env()) as router:
            route = router.route("support-bot", key=user_id, default="v12")
            route.version, route.bundle, route.generation
    """

    def __init__(
        self,
        settings: SdkSettings,
        *,
        agents: Iterable[str] | None = None,
        name: str = "coalmine-router",
    ) -> None:
        super().__init__(
            deployments_topic=settings.topic(DEPLOYMENTS),
            versions_topic=settings.topic(VERSIONS),
            agents=agents,
            startup_wait_s=settings.sdk_router_startup_wait_s,
        )
        self._follower = TopicFollower(
            settings,
            self._topics,
            self.apply,
            name=name,
            on_caught_up=self.mark_ready,
            extra_config={"fetch.wait.max.ms": settings.sdk_router_fetch_wait_ms},
        )
        self._follower.start()

    def close(self) -> None:
        """Stop following; routes go on answering from the last state read."""
        self._follower.close()
