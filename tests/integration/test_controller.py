"""``coalmine controller`` on a real broker: a plan walked by time, a rollback request
produced by hand, the operator's command line, and a controller SIGKILLed over and over
during a stream of commands."""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.command import Command, CommandAction, CommandOutcome, OutcomeStatus
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Verdict
from schemas.plan import RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from schemas.topics import COMMANDS, JUDGEMENTS, ROLLBACKS
from streams.controller import client
from streams.controller.inputs import Applied, Duplicate
from streams.controller.machine import apply
from streams.devtools.controller_process import ControllerProcess
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.controller_harness import (
    coalmine,
    deployment_records,
    outcomes,
    produce,
    read_all,
    register,
    running_controller,
    wait_for_state,
)
from tests.integration.harness import isolated_settings, running_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

THREE_STEPS = RolloutPlan(
    steps=(
        RolloutStep(weight=0.1, min_duration_s=1.0),
        RolloutStep(weight=0.4, min_duration_s=1.0),
        RolloutStep(weight=0.8, min_duration_s=1.0),
    )
)
HOLD = RolloutPlan(steps=(RolloutStep(weight=0.2, min_duration_s=3600),))


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return isolated_settings(kafka_settings, tmp_path)


def command(action: CommandAction, agent: str = "bot", **fields: object) -> Command:
    return client.new_command(agent, action, issued_by="tester", **fields)


def send(settings: Settings, cmd: Command) -> DeploymentState:
    outcome = client.send(settings, cmd, timeout_s=20)
    assert outcome is not None, "no outcome"
    assert outcome.status is OutcomeStatus.APPLIED, outcome.reason
    assert outcome.state is not None
    return outcome.state


def test_a_three_step_plan_is_walked_by_time(settings: Settings, tmp_path: Path) -> None:
    digests = register(settings, "bot", "v1", "v2")
    with running_controller(settings, tmp_path / "controller.log"):
        first = send(settings, command(CommandAction.DEPLOY, version="v1"))
        assert (first.phase, first.stable_version, first.stable_digest) == (
            Phase.IDLE, "v1", digests["v1"],
        )  # fmt: skip
        started = send(settings, command(CommandAction.DEPLOY, version="v2", plan=THREE_STEPS))
        assert (started.phase, started.canary_weight, started.canary_digest) == (
            Phase.CANARY, 0.1, digests["v2"],
        )  # fmt: skip
        done = wait_for_state(settings, "bot", lambda s: s.phase is Phase.PROMOTED)
    assert (done.stable_version, done.canary_version, done.canary_weight) == ("v2", None, 0.0)
    records = deployment_records(settings)
    assert [r.generation for r in records] == list(range(1, len(records) + 1))
    assert [(r.phase, r.canary_weight) for r in records] == [
        (Phase.IDLE, 0.0),
        (Phase.CANARY, 0.1),
        (Phase.CANARY, 0.4),
        (Phase.CANARY, 0.8),
        (Phase.PROMOTED, 0.0),
    ]
    assert [r.change.cause for r in records if r.change] == [
        "deploy", "deploy", "step", "step", "step",
    ]  # fmt: skip
    for earlier, later in itertools.pairwise(records[1:]):
        assert later.updated_at and earlier.updated_at
        waited = (later.updated_at - earlier.updated_at).total_seconds()
        assert waited >= 1.0, "a step ended before its minimum duration"


def test_a_rollback_request_by_hand_takes_the_canary_out(
    settings: Settings, tmp_path: Path
) -> None:
    register(settings, "bot", "v1", "v2")
    with (
        running_worker(settings, tmp_path / "worker.log") as worker,
        running_controller(settings, tmp_path / "controller.log"),
    ):
        send(settings, command(CommandAction.DEPLOY, version="v1"))
        canary = send(settings, command(CommandAction.DEPLOY, version="v2", plan=HOLD))
        assert canary.canary_weight == 0.2
        request = RollbackCommand(
            id="rollback-by-hand-1",
            time=datetime.now(UTC),
            agent="bot",
            from_version="v2",
            reason="error rate 3x the stable's",
            alert_ids=("alert-7",),
            issued_by="oncall",
        )
        produce(settings, ROLLBACKS, [("bot", request), ("bot", request)])
        state = wait_for_state(settings, "bot", lambda s: s.phase is Phase.ROLLED_BACK)
        answers = _wait_outcomes(settings, request.id, 2)
        # The audit trail in ClickHouse, as a person queries it.
        assert wait_for(worker, "SELECT count() FROM coalmine.deployment_events", 3) == 3
        audit = worker.sql(
            "SELECT generation, from_phase, to_phase, cause, canary_version, canary_weight, "
            "command_id, issued_by, reason FROM coalmine.deployment_events "
            "WHERE agent = 'bot' ORDER BY generation DESC LIMIT 1"
        )
    assert audit == [
        [3, "canary", "rolled_back", "rollback", "v2", 0.0, "rollback-by-hand-1", "oncall",
         "error rate 3x the stable's"],
    ]  # fmt: skip
    assert (state.stable_version, state.canary_version, state.canary_weight) == ("v1", "v2", 0.0)
    assert state.change is not None
    assert (state.change.cause, state.change.command_id, state.change.issued_by) == (
        "rollback", "rollback-by-hand-1", "oncall",
    )  # fmt: skip
    assert state.change.reason == "error rate 3x the stable's"
    assert state.change.evidence == {"alert_ids": "alert-7"}
    assert state.change.from_phase is Phase.CANARY
    assert [a.status for a in answers] == [OutcomeStatus.APPLIED, OutcomeStatus.DUPLICATE]
    assert len(deployment_records(settings)) == 3


def _wait_outcomes(settings: Settings, command_id: str, count: int) -> list[CommandOutcome]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        mine = [o for o in outcomes(settings) if o.command_id == command_id]
        if len(mine) >= count:
            return mine
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} outcomes for {command_id}")


def test_the_command_line_says_what_happened_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    register(settings, "bot", "v1", "v2")
    plan = tmp_path / "plan.json"
    plan.write_text(HOLD.model_dump_json())
    with running_controller(settings, tmp_path / "controller.log"):
        unknown = coalmine(settings, "promote", "nobody")
        first = coalmine(settings, "deploy", "bot", "v1", "--reason", "first")
        unregistered = coalmine(settings, "deploy", "bot", "v9")
        canary = coalmine(settings, "deploy", "bot", "v2", "--plan", str(plan))
        stale = coalmine(settings, "pause", "bot", "--expected-generation", "1")
        illegal = coalmine(settings, "approve", "bot")
        status = coalmine(settings, "status", "bot")
        as_json = coalmine(settings, "status", "--json")
    for refused, words in (
        (unknown, "unknown agent nobody"),
        (unregistered, "unknown version v9"),
        (stale, "stale generation: expected 1, bot is at generation 2"),
        (illegal, "nothing to approve"),
    ):
        assert refused.returncode != 0
        assert refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert words in refused.stderr
    assert first.returncode == 0 and first.stdout.startswith("applied: bot idle, stable v1")
    assert canary.returncode == 0, canary.stderr
    assert "canary v2 at 20% (step 1/1" in canary.stdout
    assert status.returncode == 0 and "generation 2" in status.stdout
    assert '"canary_weight": 0.2' in as_json.stdout
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text('{"steps": [{"weight": 2}]}')
    refused = coalmine(settings, "deploy", "bot", "v2", "--plan", str(bad_plan))
    assert refused.returncode != 0 and "less than or equal to 1" in refused.stderr


def test_unreadable_inputs_are_refused_and_the_controller_keeps_going(
    settings: Settings, tmp_path: Path
) -> None:
    register(settings, "bot", "v1")
    hostile = [
        b"{",
        b"\xff\xfe not json",
        b"[]",
        b"null",
        b'{"id": "x-1", "agent": "bot", "action": "fly", "time": "2026-12-01T00:00:00Z"}',
        b'{"id": "x-2", "agent": "bot", "action": "pause"}',
        b'{"id": "x-3", "agent": "bot", "action": "deploy", "version": "v1", "extra": 1}',
        b'{"id": "x-4", "agent": "bot", "action": "deploy", "time": "2026-12-01T00:00:00Z",'
        b' "issued_by": "me", "plan": {"steps": [{"weight": 1e999}]}}',
        b"x" * 500_000,
    ]
    producer = Producer(client_config(settings))
    for value in hostile:
        producer.produce(settings.topic(COMMANDS), key=b"bot", value=value)
        producer.produce(settings.topic(ROLLBACKS), key=b"bot", value=value)
        producer.produce(settings.topic(JUDGEMENTS), key=b"bot", value=value)
    assert producer.flush(30) == 0
    with running_controller(settings, tmp_path / "controller.log") as controller:
        state = send(settings, command(CommandAction.DEPLOY, version="v1"))
        assert controller.alive()
    assert (state.phase, state.stable_version, state.generation) == (Phase.IDLE, "v1", 1)
    answered = [o for o in outcomes(settings) if o.command_id.startswith("x-")]
    assert len(answered) == 8, "a command or rollback is answered, a judgement is not"
    refused = {o.command_id: o for o in answered}
    assert sorted(refused) == ["x-1", "x-2", "x-3", "x-4"]
    assert all(o.status is OutcomeStatus.REJECTED for o in refused.values())
    assert refused["x-1"].reason.startswith("not a valid command: action: Input should be")
    assert "time: Field required" in refused["x-2"].reason


def judgement(state: DeploymentState, verdict: Verdict, generation: int | None = None) -> Judgement:
    assert state.rollout_id is not None and state.canary_version is not None
    return Judgement(
        id=f"j-{state.generation}-{verdict}-{generation}",
        time=datetime.now(UTC),
        agent=state.agent,
        rollout_id=state.rollout_id,
        generation=state.generation if generation is None else generation,
        stable_version=state.stable_version or "",
        canary_version=state.canary_version,
        window_end=datetime.now(UTC),
        windows_compared=12,
        verdict=verdict,
        metrics=(),
        explanation=f"judged {verdict}",
    )


def test_judgements_end_a_step_that_needs_a_pass_or_pause_without_auto_rollback(
    settings: Settings, tmp_path: Path
) -> None:
    register(settings, "bot", "v1", "v2")
    needs_pass = RolloutPlan(
        steps=(
            RolloutStep(weight=0.1, min_duration_s=0.5, require_pass=True),
            RolloutStep(weight=0.5, min_duration_s=3600),
        ),
        auto_rollback=False,
    )
    with running_controller(settings, tmp_path / "controller.log"):
        send(settings, command(CommandAction.DEPLOY, version="v1"))
        canary = send(settings, command(CommandAction.DEPLOY, version="v2", plan=needs_pass))
        stale = judgement(canary, Verdict.PASS, generation=canary.generation - 1)
        produce(settings, JUDGEMENTS, [("bot", stale), ("bot", judgement(canary, Verdict.ALERT))])
        time.sleep(2)  # past the step's minimum duration: only a PASS is missing
        assert deployment_records(settings)[-1] == canary
        produce(settings, JUDGEMENTS, [("bot", judgement(canary, Verdict.PASS))])
        second = wait_for_state(settings, "bot", lambda s: s.canary_weight == 0.5)
        produce(settings, JUDGEMENTS, [("bot", judgement(second, Verdict.ROLLBACK))])
        paused = wait_for_state(settings, "bot", lambda s: s.phase is Phase.PAUSED)
    assert paused.canary_weight == 0.5 and paused.last_reason == "judged rollback"
    assert paused.change is not None and paused.change.cause == "judgement"
    assert paused.change.evidence["verdict"] == "rollback"
    causes = [r.change.cause for r in deployment_records(settings) if r.change]
    assert causes == ["deploy", "deploy", "judgement", "step", "judgement"]
    assert not [o for o in outcomes(settings) if o.command_id.startswith("j-")]


def test_no_controller_is_a_clear_message(settings: Settings) -> None:
    ensure_topics(settings)
    result = coalmine(settings, "pause", "bot", "--wait", "1")
    assert result.returncode != 0
    assert "no controller answered in 1 s: is `coalmine controller` running?" in result.stderr


def _command_stream(rng: random.Random, count: int) -> list[Command]:
    """Commands of every kind on two agents, many illegal in the state they meet; some sent
    twice. Plans hold each step for an hour, so time changes nothing during the test."""
    held = RolloutPlan(
        steps=(
            RolloutStep(weight=0.1, min_duration_s=3600),
            RolloutStep(weight=0.5, min_duration_s=3600, approval=True),
            RolloutStep(weight=1.0, min_duration_s=3600),
        )
    )
    stream: list[Command] = []
    for _ in range(count):
        if stream and rng.random() < 0.05:
            stream.append(rng.choice(stream))
            continue
        action = rng.choice(list(CommandAction) + [CommandAction.DEPLOY] * 3)
        fields: dict[str, object] = {}
        if action is CommandAction.DEPLOY:
            fields = {"version": rng.choice(("v1", "v2", "v3", "v4")), "plan": held}
        elif action is CommandAction.ROLLBACK and rng.random() < 0.3:
            fields = {"version": rng.choice(("v1", "v2"))}
        elif action is CommandAction.PROMOTE:
            fields = {"full": rng.random() < 0.3}
        stream.append(command(action, agent=rng.choice(("a", "b")), **fields))
    return stream


def test_sigkilled_over_and_over_the_state_is_the_machine_replayed(
    settings: Settings, tmp_path: Path
) -> None:
    versions = {
        (agent, label): digest
        for agent, labels in (("a", ("v1", "v2", "v3")), ("b", ("v1", "v2")))
        for label, digest in register(settings, agent, *labels).items()
    }
    rng = random.Random(11)
    stream = _command_stream(rng, 200)
    produced = threading.Event()

    def produce_slowly() -> None:
        for i in range(0, len(stream), 5):
            produce(settings, COMMANDS, [(c.agent, c) for c in stream[i : i + 5]])
            time.sleep(0.3)
        produced.set()

    controller = ControllerProcess(settings, tmp_path / "controller.log")
    controller.start()
    producer = threading.Thread(target=produce_slowly)
    producer.start()
    kills = 0
    try:
        while not produced.is_set() or kills < 5:
            time.sleep(rng.uniform(0.3, 1.0))
            controller.kill()
            kills += 1
            controller.start()
        producer.join()
        answered = _wait_for_every_answer(settings, {c.id for c in stream})
    finally:
        controller.kill()
    # The pure machine over every command in topic order.
    in_topic_order = [Command.model_validate_json(v) for v in read_all(settings, COMMANDS)]
    assert len(in_topic_order) == len(stream)
    replayed: dict[str, DeploymentState] = {}
    applied_ids: list[str] = []
    now = datetime.now(UTC)
    for cmd in in_topic_order:
        result = apply(replayed.get(cmd.agent), cmd, now, versions)
        if isinstance(result, Applied):
            replayed[cmd.agent] = result.state
            applied_ids.append(cmd.id)
        else:
            assert not isinstance(result, Duplicate) or cmd.id in applied_ids
    records = deployment_records(settings)
    by_generation: dict[tuple[str, int], DeploymentState] = {}
    for record in records:
        earlier = by_generation.setdefault((record.agent, record.generation), record)
        assert _compared(earlier) == _compared(record), "two different records of a generation"
    for agent, state in replayed.items():
        generations = sorted(g for a, g in by_generation if a == agent)
        assert generations == list(range(1, state.generation + 1)), "a gap in the generations"
        latest = by_generation[(agent, state.generation)]
        assert _compared(latest) == _compared(state)
    written_ids = [
        record.change.command_id if record.change else None for record in by_generation.values()
    ]
    assert sorted(map(str, written_ids)) == sorted(applied_ids), "a command applied twice, or lost"
    applied_outcomes = [o.command_id for o in answered if o.status is OutcomeStatus.APPLIED]
    assert len(applied_outcomes) == len(set(applied_outcomes)), "a command applied twice"
    assert set(applied_outcomes) <= set(applied_ids)
    skipped = controller.log_tail(100_000).count("processed before a restart")
    print(f"{kills} kills, {len(applied_ids)} of {len(stream)} commands applied, {skipped} skipped")


def _compared(state: DeploymentState) -> dict[str, object]:
    """A state without the clock's and the position's fields (the replay has neither)."""
    return state.model_dump(exclude={"updated_at", "step_started_at", "input_offsets"}, mode="json")


def _wait_for_every_answer(settings: Settings, ids: set[str]) -> list[CommandOutcome]:
    """Outcomes until every command has one (a command applied just before a kill may have
    lost its answer: it gets a `duplicate` when it is read again)."""
    deadline = time.monotonic() + 60
    while True:
        answers = outcomes(settings)
        missing = ids - {a.command_id for a in answers}
        if not missing or time.monotonic() > deadline:
            assert not missing, f"{len(missing)} commands without an outcome"
            return answers
        time.sleep(0.5)
