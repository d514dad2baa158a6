"""The detector's adapter with in-memory topics and store: deployments and published ids from
the follower, partials from version-stats, the replay of a judge from the store, what is
published and in which order, junk counted, and a restart that sends nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from schemas.alert import Alert
from schemas.deployment import DeploymentState
from schemas.judgement import Judgement, Verdict
from schemas.rollback import RollbackCommand
from schemas.topics import ALERTS, DEPLOYMENTS, JUDGEMENTS, LATE_HEADER, ROLLBACKS, VERSION_STATS
from schemas.window_stats import WindowStats
from streams.detector.watch import Generation, Partial
from streams.ingest.route import Header, RawMessage
from streams.runtime.detect import Detector
from streams.runtime.processor import Retrier, RetryPolicy
from streams.sdk.compacted import Record
from streams.settings import Settings
from tests.unit.detector.sim import Arm, window, window_start
from tests.unit.detector.test_watch import state

SETTINGS = Settings()
NO_WAIT = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0)


class Topics:
    """Every record sent, in order, as (topic, key, value); the first send fails once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.failures = 1

    def writer(self, topic: str) -> Writer:
        return Writer(self, topic)

    def values(self, topic: str) -> list[bytes]:
        return [value or b"" for name, _, value in self.sent if name == topic]


class Writer:
    def __init__(self, topics: Topics, name: str) -> None:
        self.topics, self.name = topics, name

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        if self.topics.failures:
            self.topics.failures -= 1
            raise ConnectionError("the broker went away")
        self.topics.sent.append((self.name, key, value))


class Clock:
    def __init__(self) -> None:
        self.now = window_start(0)

    def __call__(self) -> datetime:
        return self.now


def detector(
    topics: Topics, stored: Sequence[Partial], clock: Clock
) -> tuple[Detector, list[Generation]]:
    asked: list[Generation] = []

    async def read(generation: Generation) -> list[tuple[WindowStats, bool]]:
        asked.append(generation)
        return [(p.stats, p.late) for p in stored]

    writers = {t.name: topics.writer(t.name) for t in (ALERTS, ROLLBACKS, JUDGEMENTS)}
    made = Detector(SETTINGS, writers, read, Retrier(lambda: False, NO_WAIT), clock)
    made.caught_up.set()
    return made, asked


def record(topic: str, value: DeploymentState | Alert | RollbackCommand) -> Record:
    return Record(SETTINGS.topic_prefix + "." + topic, b"agent", value.model_dump_json().encode())


def message(stats: WindowStats | None, late: bool = False) -> RawMessage:
    value = b"{not json" if stats is None else stats.model_dump_json().encode()
    headers = ((LATE_HEADER, b"1" if late else b"0"),)
    return RawMessage(SETTINGS.topic(VERSION_STATS), 0, 0, b"agent", value, headers)


def windows(rng: np.random.Generator, indices: range) -> list[WindowStats]:
    bad = Arm(error_rate=0.08)
    return [
        window(rng, i, v, 250, bad if v == "v2" else Arm()) for i in indices for v in ("v1", "v2")
    ]


async def run(made: Detector, clock: Clock, batches: list[list[WindowStats]], first: int) -> None:
    for n, batch in enumerate(batches):
        clock.now = window_start(first + n + 1) + timedelta(seconds=3)
        assert await made.on_partials([message(stats) for stats in batch])
        assert await made.tick()


def test_a_judge_is_replayed_from_the_store_and_its_events_are_published_in_order() -> None:
    topics, clock = Topics(), Clock()
    rng = np.random.default_rng(21)
    stored = [Partial(s) for s in windows(rng, range(10))]
    made, asked = detector(topics, stored, clock)
    later = windows(rng, range(10, 30))

    async def scenario() -> None:
        assert await made.on_records([record(DEPLOYMENTS.name, state())])
        assert asked == []  # no partial of the agent here yet: another worker's to judge
        clock.now = window_start(11)
        assert await made.on_partials([message(None)])
        await run(made, clock, [later[i : i + 2] for i in range(0, len(later), 2)], 10)

    asyncio.run(scenario())
    (generation,) = asked
    assert generation.judged.generation == 3
    assert made.counters.partials_invalid == 1 and made.counters.judges_replayed == 1
    judgements = [Judgement.model_validate_json(v) for v in topics.values(JUDGEMENTS.name)]
    assert [j.window_end for j in judgements] == [window_start(i + 1) for i in range(30)]
    assert judgements[-1].verdict is Verdict.ROLLBACK
    (command,) = [RollbackCommand.model_validate_json(v) for v in topics.values(ROLLBACKS.name)]
    alerts = [Alert.model_validate_json(v) for v in topics.values(ALERTS.name)]
    assert set(command.alert_ids) == {a.id for a in alerts}
    order = [name for name, _, _ in topics.sent]
    assert order.index(ROLLBACKS.name) > max(i for i, n in enumerate(order) if n == ALERTS.name)
    assert {key for _, key, _ in topics.sent} == {b"agent"}
    assert made.counters.rollbacks_published == 1


def test_a_restarted_detector_sends_no_alert_or_rollback_already_on_their_topics() -> None:
    rng = np.random.default_rng(22)
    everything = windows(rng, range(30))
    first, clock = Topics(), Clock()
    made, _ = detector(first, [], clock)

    async def live() -> None:
        assert await made.on_records([record(DEPLOYMENTS.name, state())])
        await run(made, clock, [everything[i : i + 2] for i in range(0, 60, 2)], 0)

    asyncio.run(live())
    published = [
        record(ALERTS.name, Alert.model_validate_json(v)) for v in first.values(ALERTS.name)
    ] + [
        record(ROLLBACKS.name, RollbackCommand.model_validate_json(v))
        for v in first.values(ROLLBACKS.name)
    ]
    assert len(published) >= 2

    again = Topics()
    restarted, asked = detector(again, [Partial(s) for s in everything], clock)

    async def restart() -> None:
        assert await restarted.on_records([record(DEPLOYMENTS.name, state()), *published])
        assert await restarted.on_partials([message(everything[-1])])

    asyncio.run(restart())
    assert len(asked) == 1
    assert again.values(ALERTS.name) == again.values(ROLLBACKS.name) == []
    assert decisions(again) == decisions(first)


def decisions(topics: Topics) -> list[tuple[str, Verdict, int]]:
    judged = [Judgement.model_validate_json(v) for v in topics.values(JUDGEMENTS.name)]
    return [(j.id, j.verdict, j.windows_compared) for j in judged]
