"""``coalmine controller``: the single writer of deployment state, a small confluent-kafka
process around the pure state machine (:mod:`streams.controller.machine`).

At start it rebuilds every agent's state from the compacted ``coalmine.deployments`` (read to
its end) and the registered versions from ``coalmine.versions``. Then, for each command
(``coalmine.commands``), rollback request (``coalmine.rollbacks``) and judgement
(``coalmine.judgements``), in order: apply it, write the new state to ``coalmine.deployments``
and wait until the broker has it (acks=all), write the outcome of a command or rollback
request to ``coalmine.command-outcomes`` (a judgement has nobody waiting for an answer), and
only then commit the input's offset.
Between inputs it lets time pass (a :class:`Tick` per live rollout) and reads the figures of
gated versions.

Exactly once, after a crash. Inputs after the last committed offset come again; each state
record carries ``input_offsets``, where the controller was when it wrote it, so a restarted
controller skips every input below the highest of them: an input that changed a state is
never applied twice, and one rejected before a later record is never re-judged against a
newer state. Inputs read again after the last record were rejected (they changed nothing),
and time does not pass until the controller has read up to where the input topics ended when
it started, so they meet the state they met before and are rejected again. A command id is
also remembered per agent (``recent_command_ids``): one sent twice is a ``duplicate``.
One controller: it joins its consumer group with a fixed instance id (static membership), so
a restarted controller takes its predecessor's place at once, and a second one started by
mistake fences the first.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, ValidationError

from schemas.command import MAX_REASON_CHARS, Command, CommandId, CommandOutcome, OutcomeStatus
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement as JudgementEvent
from schemas.rollback import RollbackCommand
from schemas.topics import (
    COMMAND_OUTCOMES,
    COMMANDS,
    DEPLOYMENTS,
    JUDGEMENTS,
    ROLLBACKS,
    VERSIONS,
)
from schemas.trace import UNPRINTABLE, Identifier
from streams.controller.figures import EvalFigureSource
from streams.controller.inputs import (
    Applied,
    Duplicate,
    GateReading,
    Input,
    Judgement,
    Rejected,
    Result,
    Tick,
)
from streams.controller.machine import MAX_STEPS_PER_TICK, apply
from streams.controller.records import load_states
from streams.errors import CoalmineError
from streams.logs import librdkafka_log
from streams.sdk.compacted import CompactedReader, latest, read_to_end, retrying
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics
from streams.versions.catalog import VersionCatalog

log = logging.getLogger(__name__)

INSTANCE_ID: Final = "controller"
"""The controller's static member id in its consumer group: one controller."""
POLL_S: Final = 0.2
"""Longest wait for an input; also how often time passes for live rollouts."""
COMMIT_INTERVAL_S: Final = 1.0
READ_TIMEOUT_S: Final = 30.0
WRITE_TIMEOUT_S: Final = 30.0
CONTROL_TOPICS: Final = (VERSIONS, COMMANDS, ROLLBACKS, JUDGEMENTS, COMMAND_OUTCOMES, DEPLOYMENTS)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def consumer_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}.controller"


def input_key(topic: str, partition: int) -> str:
    """How ``input_offsets`` names an input partition."""
    return f"{topic}:{partition}"


class Controller:
    """The loop: :meth:`start` rebuilds, :meth:`run_once` handles one input or lets time
    pass, :meth:`close` leaves."""

    def __init__(
        self,
        settings: Settings,
        figures: EvalFigureSource,
        *,
        gate_interval_s: float = 2.0,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.figures = figures
        self.gate_interval_s = gate_interval_s
        self.clock = clock
        self.states: dict[str, DeploymentState] = {}
        self.versions: dict[tuple[str, str], str] = {}
        self.applied = 0
        """Inputs that made a new generation since start."""
        self._inputs: dict[str, Callable[[bytes], Input]] = {
            settings.topic(COMMANDS): Command.model_validate_json,
            settings.topic(ROLLBACKS): RollbackCommand.model_validate_json,
            settings.topic(JUDGEMENTS): _judgement,
        }
        self._next: dict[str, int] = {}
        """Per input partition: the next offset to process (below it: processed)."""
        self._backlog_end: dict[str, int] = {}
        self._next_gate_read = 0.0
        self._uncommitted: dict[str, TopicPartition] = {}
        self._next_commit = 0.0
        self._connect = {**client_config(settings), "logger": librdkafka_log(__name__)}
        self._versions_reader: CompactedReader | None = None
        self._catalog = VersionCatalog()
        """Versions as every reader sees them: a label's first record."""
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def start(self) -> None:
        ensure_topics(self.settings, [TopicSpec.of(t, self.settings) for t in CONTROL_TOPICS])
        deployments = latest(
            read_to_end(self._connect, self.settings.topic(DEPLOYMENTS), READ_TIMEOUT_S)
        )
        self.states = load_states(deployments)
        self._versions_reader = CompactedReader(
            self._connect, self.settings.topic(VERSIONS), READ_TIMEOUT_S
        )
        self.versions = self._catalog.observe_all(self._versions_reader.catch_up())
        self._producer = Producer(
            {**self._connect, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
        )
        consumer = Consumer(
            {
                **self._connect,
                "group.id": consumer_group(self.settings),
                "group.instance.id": INSTANCE_ID,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
            }
        )
        self._consumer = consumer
        partitions = [TopicPartition(topic, 0) for topic in self._inputs]
        committed: list[TopicPartition] = retrying(
            lambda: consumer.committed(partitions, timeout=READ_TIMEOUT_S),
            "read the controller's offsets",
            READ_TIMEOUT_S,
        )
        for tp in committed:
            key = input_key(tp.topic, tp.partition)
            recorded = max((s.input_offsets.get(key, 0) for s in self.states.values()), default=0)
            self._next[key] = max(recorded, tp.offset)
            _, high = retrying(
                partial(consumer.get_watermark_offsets, tp, timeout=READ_TIMEOUT_S),
                f"read the end of {tp.topic}",
                READ_TIMEOUT_S,
            )
            self._backlog_end[key] = high
        consumer.subscribe(list(self._inputs))
        log.info(
            "controller started: %d deployments, %d versions, inputs from %s",
            len(self.states), len(self.versions), self._next,
        )  # fmt: skip

    @property
    def caught_up(self) -> bool:
        """Read up to where the inputs ended at start: time may pass again."""
        return all(self._next[key] >= end for key, end in self._backlog_end.items())

    def run_once(self) -> None:
        assert self._consumer is not None
        message = self._consumer.poll(POLL_S)
        if message is None:
            self._commit_now()
            if self.caught_up:
                self._let_time_pass()
            return
        error = message.error()
        if error is not None:
            if error.fatal() or error.code() == KafkaError._FENCED:
                raise CoalmineError(f"the controller's consumer failed: {error.str()}")
            log.warning("consumer: %s", error.str())
            return
        self._handle(message)

    def _handle(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        key = input_key(topic, partition)
        event = self._parse(message)
        if offset < self._next.get(key, 0):
            log.info("skipping %s@%d: processed before a restart", key, offset)
            # Only a command known applied is answered again.
            if isinstance(event, Command | RollbackCommand):
                state = self.states.get(event.agent)
                if state is not None and event.id in state.recent_command_ids:
                    self._answer(event, Duplicate(state))
            self._commit(message)
            return
        self._next[key] = offset + 1
        if isinstance(event, Command | RollbackCommand):
            self._answer(event, self._apply(event))
        elif event is not None:
            result = self._apply(event)
            if isinstance(result, Rejected):
                log.info("judgement %s@%d changed nothing: %s", key, offset, result.reason)
        self._commit(message)

    def _parse(self, message: Message) -> Input | None:
        topic = message.topic() or ""
        parse = self._inputs[topic]
        raw: bytes = message.value() or b""
        try:
            event = parse(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = f"{'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}"
            log.error(
                "skipping an unreadable input at %s:%s@%s: %s",
                message.topic(), message.partition(), message.offset(), problem,
            )  # fmt: skip
            address = None if topic == self.settings.topic(JUDGEMENTS) else _addressee(raw)
            if address is not None:  # whoever sent it may be waiting for an answer
                self._send_outcome(
                    CommandOutcome(
                        command_id=address.id,
                        agent=address.agent,
                        time=self.clock(),
                        status=OutcomeStatus.REJECTED,
                        reason=_printable(f"not a valid command: {problem}"),
                    )
                )
            return None
        return event

    def _apply(self, event: Input) -> Result:
        named = (event.agent, event.version) if isinstance(event, Command) else None
        if named is not None and named[1] is not None and named not in self.versions:
            self._refresh_versions()
        try:
            result = apply(self.states.get(event.agent), event, self.clock(), self.versions)
        except (ValueError, AssertionError) as exc:
            # A bug of ours, not of the input; refusing the input keeps the controller from
            # crashing on it again at every restart.
            log.exception("the state machine failed on %s", event)
            return Rejected(f"internal error of the controller: {type(exc).__name__}")
        if isinstance(result, Applied):
            self._write(result.state)
        return result

    def _refresh_versions(self) -> None:
        assert self._versions_reader is not None
        self.versions = self._catalog.observe_all(self._versions_reader.catch_up())

    def _write(self, state: DeploymentState) -> None:
        assert self._producer is not None
        state = state.model_copy(update={"input_offsets": dict(self._next)})
        self._producer.produce(
            self.settings.topic(DEPLOYMENTS),
            key=state.agent.encode(),
            value=state.model_dump_json().encode(),
            on_delivery=_raise_on_failure,
        )
        self._flush()
        self.states[state.agent] = state
        self.applied += 1
        log.info(
            "%s generation %d: %s (%s) stable %s canary %s at %.3g",
            state.agent, state.generation, state.phase.value,
            state.change.cause if state.change else "", state.stable_version,
            state.canary_version, state.canary_weight,
        )  # fmt: skip

    def _answer(self, event: Command | RollbackCommand, result: Result) -> None:
        assert self._producer is not None
        if isinstance(result, Applied):
            status, reason, state = OutcomeStatus.APPLIED, "", self.states[event.agent]
        elif isinstance(result, Duplicate):
            status, reason, state = OutcomeStatus.DUPLICATE, "applied before", result.state
        elif isinstance(result, Rejected):
            status, reason, state = OutcomeStatus.REJECTED, result.reason, None
        else:
            status, reason, state = OutcomeStatus.REJECTED, result.reason or "nothing to do", None
        outcome = CommandOutcome(
            command_id=event.id,
            agent=event.agent,
            time=self.clock(),
            status=status,
            reason=_printable(reason),
            state=state,
        )
        self._send_outcome(outcome)

    def _send_outcome(self, outcome: CommandOutcome) -> None:
        assert self._producer is not None
        self._producer.produce(
            self.settings.topic(COMMAND_OUTCOMES),
            key=outcome.agent.encode(),
            value=outcome.model_dump_json().encode(),
            on_delivery=_raise_on_failure,
        )

    def _flush(self) -> None:
        assert self._producer is not None
        try:
            left = self._producer.flush(WRITE_TIMEOUT_S)
        except KafkaException as exc:  # from a delivery report
            raise CoalmineError(f"Kafka refused a record: {exc.args[0].str()}") from None
        if left:
            raise CoalmineError(f"Kafka did not take {left} record(s) in {WRITE_TIMEOUT_S:.0f} s")

    def _commit(self, message: Message) -> None:
        """Commit the input's offset, at most once per :data:`COMMIT_INTERVAL_S`: the records'
        ``input_offsets`` already say what was processed, so a commit lost in a crash only
        brings back inputs that are skipped (below them) or rejected again."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        self._uncommitted[input_key(topic, partition)] = TopicPartition(
            topic, partition, offset + 1
        )
        if time.monotonic() >= self._next_commit:
            self._commit_now()

    def _commit_now(self) -> None:
        assert self._consumer is not None
        if self._uncommitted:
            # Outcomes go out without a wait of their own (the next state record's wait
            # covers them); they are all acknowledged before their inputs are committed.
            self._flush()
            self._consumer.commit(offsets=list(self._uncommitted.values()), asynchronous=True)
            self._uncommitted.clear()
        self._next_commit = time.monotonic() + COMMIT_INTERVAL_S

    def _let_time_pass(self) -> None:
        for agent, state in list(self.states.items()):
            if state.phase is Phase.CANARY:
                self._step_all(Tick(agent))
        if time.monotonic() >= self._next_gate_read:
            self._next_gate_read = time.monotonic() + self.gate_interval_s
            for gated in [s for s in self.states.values() if s.phase is Phase.GATED]:
                self._read_gate(gated)

    def _step_all(self, event: Input) -> None:
        """Apply ``event`` until it changes nothing (several steps may be due at once)."""
        for _ in range(MAX_STEPS_PER_TICK):
            result = apply(self.states.get(event.agent), event, self.clock(), self.versions)
            if not isinstance(result, Applied):
                return
            self._write(result.state)

    def _read_gate(self, state: DeploymentState) -> None:
        assert state.canary_version is not None and state.rollout_id is not None
        try:
            figures = self.figures.figures(state.agent, state.canary_version)
        except CoalmineError as exc:
            log.warning("cannot read the evaluation figures of %s: %s", state.agent, exc)
            return
        reading = GateReading(state.agent, state.rollout_id, figures)
        result = apply(state, reading, self.clock(), self.versions)
        if isinstance(result, Applied):
            self._write(result.state)

    def close(self) -> None:
        """Leave: outcomes sent, offsets committed when Kafka lets us (if not, the inputs
        come again to the next controller, which skips or rejects them again)."""
        try:
            if self._consumer is not None and self._uncommitted:
                self._flush()
                self._consumer.commit(offsets=list(self._uncommitted.values()), asynchronous=False)
        except (KafkaException, CoalmineError) as exc:
            log.warning("leaving without the last commit: %s", exc)
        if self._consumer is not None:
            self._consumer.close()
        if self._versions_reader is not None:
            self._versions_reader.close()


_UNPRINTABLE = re.compile(f"[{UNPRINTABLE}]")


def _printable(reason: str) -> str:
    """``reason`` fit for an outcome (one line, bounded)."""
    return _UNPRINTABLE.sub(" ", reason)[:MAX_REASON_CHARS].strip()


class _Address(BaseModel):
    """Who an unreadable command came from, when that much of it can be read."""

    id: CommandId
    agent: Identifier


def _addressee(raw: bytes) -> _Address | None:
    try:
        document = json.loads(raw)
        if not isinstance(document, dict):
            return None
        return _Address.model_validate({"id": document.get("id"), "agent": document.get("agent")})
    except (ValueError, ValidationError):
        return None


def _judgement(raw: bytes) -> Judgement:
    return Judgement.of(JudgementEvent.model_validate_json(raw))


def _raise_on_failure(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        raise KafkaException(error)


def run(settings: Settings, figures: EvalFigureSource, gate_interval_s: float) -> int:
    """Run until SIGTERM or Ctrl-C (raised as KeyboardInterrupt by the command line)."""
    controller = Controller(settings, figures, gate_interval_s=gate_interval_s)
    try:
        controller.start()
        while True:
            controller.run_once()
    finally:
        controller.close()
