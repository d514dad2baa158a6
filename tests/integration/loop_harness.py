"""The loop on the real pipeline, for tests: traffic routed by an SDK router through a worker
(which runs the detector) and a controller, separate processes on the session's broker and
chDB, with one agent whose stable version is deployed and whose canary a test deploys."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from schemas.alert import Alert
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Metric
from schemas.plan import JudgeOverrides, RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from schemas.topics import ALERTS, JUDGEMENTS, ROLLBACKS
from streams.devtools import generate
from streams.devtools.child_process import killed_after
from streams.devtools.controller_process import ControllerProcess
from streams.devtools.traffic import TrafficPlan, agent_profiles
from streams.devtools.worker_process import WorkerProcess
from streams.sdk.router import Router
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.controller_harness import coalmine, read_all, register, wait_for_state
from tests.integration.harness import isolated_settings

E = TypeVar("E", Judgement, Alert, RollbackCommand)
(PROFILE,) = agent_profiles(1)
AGENT, STABLE, CANARY = PROFILE.name, PROFILE.stable_version, PROFILE.canary_version
RATE = 40.0
"""Requests per second: test-sized traffic."""
HELD = 3600.0
LOOSE = JudgeOverrides(
    alpha_rollback=1e-4,
    tolerances={m: 20.0 if m is Metric.LATENCY_P99_EXCEEDANCE else 10.0 for m in Metric},
)
"""Tolerances an A/A canary passes at test-sized traffic within tens of seconds, and a false
rollback over the whole rollout at most 1e-4 (the default 0.01 would fail one run in 100)."""


@dataclass
class Loop:
    settings: Settings
    worker: WorkerProcess
    router: Router
    tmp_path: Path

    def deploy(self, plan: RolloutPlan) -> DeploymentState:
        path = self.tmp_path / "plan.json"
        path.write_text(plan.model_dump_json())
        done = coalmine(self.settings, "deploy", AGENT, CANARY, "--plan", str(path))
        assert done.returncode == 0, done.stderr
        return wait_for_state(self.settings, AGENT, lambda s: s.canary_version == CANARY)

    @contextmanager
    def traffic(self, canary_error_rate: float, rate: float = RATE) -> Iterator[None]:
        """Requests at ``rate`` routed by the loop's router, 1 % errors on stable."""
        plan = TrafficPlan(
            rate=rate,
            duration_s=None,
            agents=(PROFILE,),
            error_rate=0.01,
            canary_error_rate=canary_error_rate,
            seed=int(time.time()),
        )
        stop = threading.Event()
        sender = threading.Thread(
            target=generate.run,
            args=(self.settings, plan),
            kwargs={"router": self.router, "stop": stop, "progress": lambda _: None},
        )
        sender.start()
        try:
            yield
        finally:
            stop.set()
            sender.join()

    def events(self, model: type[E]) -> list[E]:
        topic = {Judgement: JUDGEMENTS, Alert: ALERTS, RollbackCommand: ROLLBACKS}[model]
        return [model.model_validate_json(v) for v in read_all(self.settings, topic)]

    def wait_for(self, phase: Phase, timeout_s: float = 120) -> DeploymentState:
        return wait_for_state(self.settings, AGENT, lambda s: s.phase is phase, timeout_s)


@contextmanager
def running_loop(kafka_settings: Settings, tmp_path: Path) -> Iterator[Loop]:
    """A worker and a controller on topics of their own, ``v12`` stable, a router."""
    settings = replace(isolated_settings(kafka_settings, tmp_path), traces_partitions=2)
    ensure_topics(settings)
    with ExitStack() as stack:
        worker = stack.enter_context(killed_after(WorkerProcess(settings, tmp_path / "w.log")))
        stack.enter_context(killed_after(ControllerProcess(settings, tmp_path / "c.log")))
        register(settings, AGENT, STABLE, CANARY)
        first = coalmine(settings, "deploy", AGENT, STABLE)
        assert first.returncode == 0, first.stderr
        router = stack.enter_context(Router(settings, agents=[AGENT], name="test-router"))
        assert router.wait_ready(30)
        yield Loop(settings, worker, router, tmp_path)


def plan(
    *steps: RolloutStep, auto_rollback: bool = True, judge: JudgeOverrides | None = None
) -> RolloutPlan:
    return RolloutPlan(steps=steps, auto_rollback=auto_rollback, judge=judge or JudgeOverrides())
