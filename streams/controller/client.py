"""The operator's side of the controller: ``coalmine deploy``, ``promote``, ``rollback``,
``pause``, ``resume``, ``approve``, ``abort`` and ``status``.

A command goes to ``coalmine.commands`` with a fresh id; the command line then waits for
the controller's outcome with that id on ``coalmine.command-outcomes``, reading from the end
the topic had *before* the command was sent, so an answer cannot slip past.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pydantic import ValidationError

from schemas.command import Command, CommandAction, CommandOutcome, OutcomeStatus
from schemas.deployment import DeploymentState, Phase
from schemas.plan import RolloutPlan
from schemas.topics import COMMAND_OUTCOMES, COMMANDS, DEPLOYMENTS
from streams.controller.records import load_states
from streams.errors import CoalmineError
from streams.logs import librdkafka_log
from streams.sdk.compacted import latest, read_to_end
from streams.sdk.kafka_security import client_config
from streams.settings import Settings

ANSWER_TIMEOUT_S: Final = 10.0
KAFKA_TIMEOUT_S: Final = 10.0
MAX_PLAN_BYTES: Final = 64 * 1024


class CommandRejectedError(CoalmineError):
    """The controller refused the command; the message is its reason."""


def new_command(agent: str, action: CommandAction, **fields: Any) -> Command:
    """A command with a fresh id, issued now; bad fields raise one readable line."""
    try:
        return Command(
            id=f"cli-{uuid.uuid4().hex}",
            time=datetime.now(UTC),
            agent=agent,
            action=action,
            **fields,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CoalmineError(f"{where}: {first['msg']}") from None


def load_plan(path: Path) -> RolloutPlan:
    """A rollout plan from a JSON or YAML file (``.yaml``/``.yml``), read as strictly as a
    version file (duplicate keys, aliases, NaN refused)."""
    from streams.versions.load import parse_model_file, read_file  # noqa: PLC0415 (YAML)

    return parse_model_file(read_file(path, MAX_PLAN_BYTES), str(path), RolloutPlan, "a plan file")


def send(settings: Settings, command: Command, timeout_s: float) -> CommandOutcome | None:
    """Produce ``command`` and wait up to ``timeout_s`` for its outcome (None: no answer)."""
    outcomes = Consumer(
        {
            **_connect(settings),
            "group.id": f"coalmine-cli-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    try:
        partition = TopicPartition(settings.topic(COMMAND_OUTCOMES), 0)
        try:
            _, end = outcomes.get_watermark_offsets(partition, timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            raise CoalmineError(
                f"Kafka at {settings.kafka_bootstrap} does not answer ({exc.args[0].str()}); "
                "is the broker up, and has `coalmine controller` created its topics?"
            ) from None
        partition.offset = end
        outcomes.assign([partition])
        _produce(settings, command)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = outcomes.poll(min(left, 0.5))
            if message is None or message.error() is not None:
                continue
            try:
                outcome = CommandOutcome.model_validate_json(message.value() or b"")
            except ValidationError:
                continue
            if outcome.command_id == command.id:
                return outcome
        return None
    finally:
        outcomes.close()


def _connect(settings: Settings) -> dict[str, Any]:
    return {**client_config(settings), "logger": librdkafka_log("coalmine.librdkafka")}


def _produce(settings: Settings, command: Command) -> None:
    producer = Producer({**_connect(settings), "acks": "all", "enable.idempotence": True})
    producer.produce(
        settings.topic(COMMANDS), key=command.agent.encode(), value=command.model_dump_json()
    )
    if producer.flush(KAFKA_TIMEOUT_S):
        raise CoalmineError(f"Kafka at {settings.kafka_bootstrap} did not take the command")


def run(settings: Settings, command: Command, timeout_s: float = ANSWER_TIMEOUT_S) -> int:
    """Send ``command``, print what came of it; 0 when applied (or applied before)."""
    outcome = send(settings, command, timeout_s)
    if outcome is None:
        raise CoalmineError(
            f"no controller answered in {timeout_s:.0f} s: is `coalmine controller` running? "
            f"(the command {command.id} stays queued and may still be applied)"
        )
    if outcome.status is OutcomeStatus.REJECTED:
        raise CommandRejectedError(f"rejected: {outcome.reason}")
    state = outcome.state
    done = "applied" if outcome.status is OutcomeStatus.APPLIED else "already applied"
    print(f"{done}: {describe(state) if state else command.agent}")
    return 0


def describe(state: DeploymentState, now: datetime | None = None) -> str:
    """One line: phase, stable and canary with its weight and step, generation."""
    parts = [f"{state.agent} {state.phase.value}", f"stable {state.stable_version or '-'}"]
    if state.canary_version is not None:
        canary = f"canary {state.canary_version} at {state.canary_weight:.0%}"
        if state.step_index is not None and state.plan is not None:
            canary += f" (step {state.step_index + 1}/{len(state.plan.steps)}"
            if state.step_started_at is not None:
                since = ((now or datetime.now(UTC)) - state.step_started_at).total_seconds()
                canary += f", {since:.0f} s in it"
            canary += ")"
        parts.append(canary)
    parts.append(f"generation {state.generation}")
    return ", ".join(parts)


def status(settings: Settings, agent: str | None, as_json: bool) -> int:
    table = latest(
        read_to_end(client_config(settings), settings.topic(DEPLOYMENTS), KAFKA_TIMEOUT_S)
    )
    states = sorted(load_states(table).values(), key=lambda s: s.agent)
    if agent is not None:
        states = [s for s in states if s.agent == agent]
        if not states:
            raise CoalmineError(f"unknown agent {agent}: nothing was deployed")
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in states], indent=2))
        return 0
    if not states:
        print("no deployments")
    for state in states:
        print(describe(state))
        if state.last_reason:
            print(f"  last reason: {state.last_reason}")
        if state.gate is not None:
            gate = state.gate
            print(
                f"  evaluation gate {'passed' if gate.passed else 'failed'}: {gate.cases} cases, "
                f"quality {_figure(gate.quality)}, error rate {_figure(gate.error_rate)}"
            )
        elif state.phase is Phase.GATED:
            print("  waiting for the evaluation gate")
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
