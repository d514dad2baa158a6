"""The evaluation gate on a real worker and chDB: a deploy held until enough good eval spans
are stored, and one that fails with its figures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas.command import CommandAction, OutcomeStatus
from schemas.deployment import Phase
from schemas.plan import EvalGate, RolloutPlan, RolloutStep
from streams.controller import client
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import KafkaPublisher, Tracer
from tests.integration.controller_harness import (
    deployment_records,
    register,
    running_controller,
    wait_for_state,
)
from tests.integration.harness import wait_for, worker

__all__ = ["worker"]  # the fixture, imported for the test below
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def eval_cases(worker: WorkerProcess, agent: str, version: str, quality: float, n: int) -> None:
    """``n`` offline evaluation cases of a version, stored before this returns."""
    publisher = KafkaPublisher.from_settings(worker.settings)
    tracer = Tracer(agent, version, publisher, environment="eval")
    for _ in range(n):
        with tracer.request("eval-case") as case:
            case.set_outcome(task_completed=True, quality_score=quality)
    publisher.close()


def stored(worker: WorkerProcess, agent: str, version: str, environment: str, n: int) -> None:
    query = (
        "SELECT count() FROM coalmine.spans "
        f"WHERE agent = '{agent}' AND version = '{version}' AND environment = '{environment}'"
    )
    assert wait_for(worker, query, n, timeout_s=60) == n


def test_a_gate_holds_a_deploy_until_enough_good_eval_cases_and_one_fails_with_its_figures(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = worker.settings
    register(settings, "bot", "v1", "v2")
    register(settings, "newbot", "v1")
    gate = EvalGate(min_cases=20, min_quality=0.7, max_error_rate=0.1)
    plan = RolloutPlan(steps=(RolloutStep(weight=0.3, min_duration_s=3600),), eval_gate=gate)
    # Production traffic of the canary does not count as evaluation.
    publisher = KafkaPublisher.from_settings(settings)
    production = Tracer("bot", "v2", publisher)
    for _ in range(30):
        with production.request("live") as request:
            request.set_outcome(task_completed=True, quality_score=0.9)
    publisher.close()
    stored(worker, "bot", "v2", "production", 30)
    with running_controller(settings, tmp_path / "controller.log"):
        send = client.send
        first = send(
            settings,
            client.new_command("bot", CommandAction.DEPLOY, version="v1", issued_by="t"),
            20,
        )
        assert first is not None and first.status is OutcomeStatus.APPLIED
        gated = send(
            settings,
            client.new_command("bot", CommandAction.DEPLOY, version="v2", plan=plan, issued_by="t"),
            20,
        )
        assert gated is not None and gated.state is not None
        assert (gated.state.phase, gated.state.canary_weight) == (Phase.GATED, 0.0)

        eval_cases(worker, "bot", "v2", 0.9, 10)
        stored(worker, "bot", "v2", "eval", 10)
        time.sleep(2.0)  # four reads of the figures
        assert deployment_records(settings)[-1].generation == gated.state.generation

        eval_cases(worker, "bot", "v2", 0.9, 10)
        passed = wait_for_state(settings, "bot", lambda s: s.phase is not Phase.GATED)
        assert (passed.phase, passed.canary_weight) == (Phase.CANARY, 0.3)
        assert passed.gate is not None
        assert (passed.gate.passed, passed.gate.cases, passed.gate.error_rate) == (True, 20, 0.0)
        assert passed.gate.quality == pytest.approx(0.9)
        assert passed.change is not None and passed.change.cause == "gate"

        failing = plan.model_copy(update={"eval_gate": EvalGate(min_cases=10, min_quality=0.7)})
        newbot = send(
            settings,
            client.new_command(
                "newbot", CommandAction.DEPLOY, version="v1", plan=failing, issued_by="t"
            ),
            20,
        )
        assert newbot is not None and newbot.state is not None
        assert newbot.state.phase is Phase.GATED
        eval_cases(worker, "newbot", "v1", 0.3, 12)
        failed = wait_for_state(settings, "newbot", lambda s: s.phase is not Phase.GATED)
    assert (failed.phase, failed.canary_weight, failed.stable_version) == (
        Phase.ROLLED_BACK, 0.0, None,
    )  # fmt: skip
    assert failed.gate is not None and not failed.gate.passed
    assert failed.gate.cases >= 10 and failed.gate.quality == pytest.approx(0.3)
    assert failed.change is not None and failed.change.evidence["passed"] is False
    assert "evaluation gate failed" in failed.last_reason
    assert "quality 0.3 (min 0.7)" in failed.last_reason
