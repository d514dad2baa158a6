"""The rows of the control topics' tables, built from their records (no ClickHouse)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.deployment import DeploymentChange, DeploymentState, GateFigures, Phase
from schemas.plan import RolloutPlan, RolloutStep
from schemas.version import canonical_json
from streams.storage.control import (
    AGENT_VERSION_COLUMNS,
    DEPLOYMENT_EVENT_COLUMNS,
    agent_version_row,
    deployment_event_row,
)
from tests.unit.versions.test_diff import example

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 12, 5, tzinfo=UTC)


def canary_state() -> DeploymentState:
    return DeploymentState(
        agent="support-bot",
        phase=Phase.CANARY,
        stable_version="v1",
        canary_version="v2",
        canary_weight=0.05,
        rollout_id="cmd-1",
        plan=RolloutPlan(steps=(RolloutStep(weight=0.05), RolloutStep(weight=1.0))),
        step_index=0,
        step_started_at=AT,
        gate=GateFigures(cases=120, quality=0.91, error_rate=0.01, passed=True),
        generation=7,
        updated_at=AT,
        last_command_id="cmd-1",
        change=DeploymentChange(
            from_phase=Phase.GATED,
            cause="gate",
            command_id="cmd-1",
            issued_by="alice",
            reason="eval gate passed",
            evidence={"cases": 120, "quality": 0.91},
        ),
    )


def test_a_version_row_holds_its_label_digest_and_canonical_bundle() -> None:
    v2 = example("v2")
    row = dict(zip(AGENT_VERSION_COLUMNS, agent_version_row(v2, 41), strict=True))
    assert row["agent"] == "support-bot"
    assert row["version"] == "v2"
    assert row["digest"] == v2.digest
    assert (row["provider"], row["model"]) == ("openai", "gpt-4o")
    assert row["prompt_names"] == ["escalation", "system"]
    assert row["tool_names"] == ["lookup_order", "issue_refund"]
    assert row["bundle"] == canonical_json(v2.bundle).decode()
    assert row["kafka_offset"] == 41


def test_a_deployment_event_row_is_the_generation_and_its_change() -> None:
    state = canary_state()
    row = dict(zip(DEPLOYMENT_EVENT_COLUMNS, deployment_event_row(state, 9, LATER), strict=True))
    assert row["generation"] == 7
    assert row["time"] == AT
    assert (row["from_phase"], row["to_phase"], row["cause"]) == ("gated", "canary", "gate")
    assert (row["stable_version"], row["canary_version"], row["canary_weight"]) == (
        "v1",
        "v2",
        0.05,
    )
    assert (row["step_index"], row["step_started_at"]) == (0, AT)
    assert (row["command_id"], row["issued_by"], row["reason"]) == (
        "cmd-1",
        "alice",
        "eval gate passed",
    )
    assert json.loads(row["evidence"]) == {"cases": 120, "quality": 0.91}
    assert (row["gate_cases"], row["gate_quality"], row["gate_passed"]) == (120, 0.91, True)
    assert json.loads(row["plan"])["steps"][1]["weight"] == 1.0
    assert DeploymentState.model_validate_json(row["state"]) == state
    assert row["kafka_offset"] == 9


def test_a_state_without_change_or_time_still_makes_a_row() -> None:
    state = DeploymentState(agent="support-bot", last_reason="first")
    row = dict(zip(DEPLOYMENT_EVENT_COLUMNS, deployment_event_row(state, 0, LATER), strict=True))
    assert row["time"] == LATER
    assert (row["from_phase"], row["to_phase"], row["cause"]) == ("", "idle", "")
    assert (row["reason"], row["evidence"], row["plan"]) == ("first", "{}", "")
    assert row["gate_cases"] is None
