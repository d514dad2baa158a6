"""``coalmine bench controller``: commands the controller applies per second.

A backlog of commands that each make a new generation (deploy, pause, resume, abort, over and
over, across agents) is produced first; then a controller, in this process, applies them.
Each one is a state record written with acks=all and waited for, plus its outcome, so the
figure is bounded by the broker's round trip, not by the state machine (a few µs). The
time counted runs from the first command read to the last applied (start-up excluded).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime

from confluent_kafka import Producer

from schemas.command import Command, CommandAction
from schemas.deployment import DeploymentState
from schemas.plan import RolloutPlan, RolloutStep
from schemas.topics import COMMANDS, VERSIONS
from streams.controller import process as process_module
from streams.controller.inputs import Applied, EvalFigures
from streams.controller.machine import VersionDigests, apply
from streams.controller.process import CONTROL_TOPICS, Controller
from streams.devtools import localkafka
from streams.devtools.control_records import example_version
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.errors import CoalmineError
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics

AGENTS = 20
HOLD = RolloutPlan(steps=(RolloutStep(weight=0.1, min_duration_s=3600),))
CYCLE = (CommandAction.DEPLOY, CommandAction.PAUSE, CommandAction.RESUME, CommandAction.ABORT)
"""Every command of a cycle is legal after the one before: each makes a generation."""
APPLY_TIMEOUT_S = 600.0


class _NoEvaluations:
    """The benchmark's plans have no evaluation gate: nothing asks for figures."""

    def figures(self, agent: str, version: str) -> EvalFigures:
        raise CoalmineError("the controller benchmark reads no evaluation figures")


def run(settings: Settings, *, commands: int) -> int:
    # One log line per change would be most of the work measured.
    logging.getLogger(process_module.__name__).setLevel(logging.WARNING)
    settings = replace(settings, topic_prefix=f"bench-controller-{uuid.uuid4().hex[:8]}")
    with ExitStack() as cleanup:
        local = local_address(settings)
        if local is not None and not process.answers(*local):
            cleanup.enter_context(localkafka.LocalKafka(settings))
        ensure_topics(settings, [TopicSpec.of(t, settings) for t in CONTROL_TOPICS])
        backlog, versions = _produce_backlog(settings, commands)
        controller = Controller(settings, _NoEvaluations())
        try:
            controller.start()
            first_applied = None
            deadline = time.monotonic() + APPLY_TIMEOUT_S
            expected = commands + AGENTS  # the backlog and each agent's first deploy
            while controller.applied < expected:
                if time.monotonic() > deadline:
                    raise CoalmineError(f"applied {controller.applied} of {expected} commands")
                controller.run_once()
                if first_applied is None and controller.applied:
                    first_applied = time.perf_counter()
            elapsed = time.perf_counter() - (first_applied or time.perf_counter())
        finally:
            controller.close()
    rate = (expected - 1) / elapsed if elapsed > 0 else float("nan")
    print(
        f"controller: {expected} commands applied in {elapsed:.2f} s: {rate:,.0f} commands/s "
        f"(each a state record acked by the broker, then its outcome; {AGENTS} agents)"
    )
    print(f"state machine alone: {_machine_us(backlog, versions):.0f} µs per command")
    return 0


def _machine_us(backlog: list[Command], versions: VersionDigests) -> float:
    """Wall time of :func:`apply` per command over the same backlog, no I/O (best of 3)."""
    now = datetime.now(UTC)
    best = float("inf")
    for _ in range(3):
        states: dict[str, DeploymentState] = {}
        started = time.perf_counter()
        for command in backlog:
            result = apply(states.get(command.agent), command, now, versions)
            if isinstance(result, Applied):
                states[command.agent] = result.state
        best = min(best, time.perf_counter() - started)
    return best / len(backlog) * 1e6


def _produce_backlog(
    settings: Settings, commands: int
) -> tuple[list[Command], dict[tuple[str, str], str]]:
    producer = Producer({**client_config(settings), "acks": "all", "linger.ms": 20})
    now = datetime.now(UTC)
    agents = [f"agent-{i}" for i in range(AGENTS)]
    versions: dict[tuple[str, str], str] = {}
    for agent in agents:
        for label in ("v1", "v2"):
            version = example_version(agent, label)
            versions[(agent, label)] = version.digest
            producer.produce(
                settings.topic(VERSIONS), key=version.key, value=version.model_dump_json()
            )
    backlog = [_command(agent, CommandAction.DEPLOY, now, version="v1") for agent in agents]
    for i in range(commands):
        action = CYCLE[(i // AGENTS) % len(CYCLE)]
        extra = {"version": "v2", "plan": HOLD} if action is CommandAction.DEPLOY else {}
        backlog.append(_command(agents[i % AGENTS], action, now, **extra))
    for command in backlog:
        producer.produce(
            settings.topic(COMMANDS), key=command.agent, value=command.model_dump_json()
        )
        producer.poll(0)
    if producer.flush(60):
        raise CoalmineError("Kafka did not take the benchmark's commands")
    return backlog, versions


def _command(agent: str, action: CommandAction, now: datetime, **fields: object) -> Command:
    return Command.model_validate(
        {
            "id": uuid.uuid4().hex,
            "time": now,
            "agent": agent,
            "action": action,
            "issued_by": "bench",
            **fields,
        }
    )
