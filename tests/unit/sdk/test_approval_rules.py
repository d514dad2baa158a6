"""The pure rules of human approval: when a call asks, what people see of its arguments,
and which decision about a request counts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from pydantic import ValidationError

from schemas.approval import MAX_ARGUMENTS_BYTES, ApprovalDecision, Decision
from schemas.version import (
    AgentBundle,
    AgentVersion,
    ApprovalPolicy,
    ArgumentCondition,
    Comparison,
    ModelSpec,
    ToolSpec,
    bundle_digest,
)
from streams.devtools.control_records import example_version
from streams.sdk.approval_rules import (
    EVERY_CALL,
    REDACTED,
    DecisionLog,
    asks,
    holds,
    judge,
    redacted,
)
from streams.versions.diff import diff_versions

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OVER_100 = ArgumentCondition(field="refund.amount", op=Comparison.GT, value=100)


def decision(
    kind: Decision, request_id: str = "a" * 32, by: str = "ana", reason: str = ""
) -> ApprovalDecision:
    return ApprovalDecision(
        id=uuid4().hex,
        request_id=request_id,
        agent="support-bot",
        time=T0,
        decision=kind,
        decided_by=by,
        reason=reason,
    )


def test_no_policy_never_asks_and_a_policy_without_conditions_asks_every_call() -> None:
    assert asks(None, {"amount": 10**9}) is None
    assert asks(ApprovalPolicy(), {}) == EVERY_CALL


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"refund": {"amount": 250}}, "refund.amount > 100"),
        ({"refund": {"amount": 100}}, None),
        ({"refund": {"amount": 99.5}}, None),
        # What cannot be told asks: a missing field, another type, a non-finite number.
        ({"refund": {}}, "refund.amount > 100"),
        ({"refund": {"amount": "250"}}, "refund.amount > 100"),
        ({"refund": {"amount": True}}, "refund.amount > 100"),
        ({"refund": {"amount": math.nan}}, "refund.amount > 100"),
        ({"refund": 5}, "refund.amount > 100"),
    ],
)
def test_a_condition_on_an_argument_asks_when_it_holds_or_cannot_be_told(
    arguments: dict[str, object], expected: str | None
) -> None:
    assert asks(ApprovalPolicy(when=(OVER_100,)), arguments) == expected


def test_conditions_reach_into_lists_and_any_one_asks() -> None:
    first_price = ArgumentCondition(field="items.0.price", op=Comparison.GE, value=50)
    to_ceo = ArgumentCondition(field="to", op=Comparison.EQ, value="ceo@example.com")
    policy = ApprovalPolicy(when=(first_price, to_ceo))
    assert asks(policy, {"items": [{"price": 10}], "to": "me@example.com"}) is None
    assert asks(policy, {"items": [{"price": 50}], "to": "x"}) == "items.0.price >= 50"
    assert asks(policy, {"items": [{"price": 1}], "to": "ceo@example.com"}) == (
        'to == "ceo@example.com"'
    )
    assert holds(first_price, {"items": []})  # index out of range: cannot be told


def test_redaction_replaces_the_named_values_and_leaves_the_callers_arguments_alone() -> None:
    arguments = {"card": {"number": "4111", "exp": "01/30"}, "emails": ["a@x", "b@x"], "n": 1}
    shown = redacted(arguments, ["card.number", "emails.1", "missing.path", "n.deeper"])
    assert shown == {
        "card": {"number": REDACTED, "exp": "01/30"},
        "emails": ["a@x", REDACTED],
        "n": 1,
    }
    assert arguments["card"] == {"number": "4111", "exp": "01/30"}


def test_arguments_json_cannot_hold_become_text_and_too_large_ones_a_note() -> None:
    shown = redacted({"when": T0, "score": math.inf}, [])
    assert shown == {"when": str(T0), "score": "Infinity"}
    assert list(redacted({"blob": "x" * MAX_ARGUMENTS_BYTES}, [])) == ["[too large]"]


def test_the_first_decision_by_the_deadline_wins_and_every_later_one_is_refused() -> None:
    deadline = T0 + timedelta(minutes=5)
    approve = judge(decision(Decision.APPROVE), T0, deadline, None)
    assert approve.applied
    again = judge(decision(Decision.APPROVE, by="bo"), T0, deadline, approve)
    deny = judge(decision(Decision.DENY), T0, deadline, approve)
    assert not again.applied
    assert not deny.applied
    assert deny.refusal == "already decided: approve by ana"


def test_a_decision_appended_after_the_deadline_is_refused_but_an_expire_never_is() -> None:
    deadline = T0
    late = judge(decision(Decision.APPROVE), deadline + timedelta(seconds=2), deadline, None)
    assert not late.applied
    assert late.refusal.startswith("after the deadline (2026-01-01 12:00:00 UTC, 2.0 s late")
    on_time = judge(decision(Decision.APPROVE), deadline, deadline, None)
    assert on_time.applied
    # The requester's expire may land before the deadline by the broker's clock (its own
    # clock ahead): it still decides, and the approval after it is refused.
    expire = judge(decision(Decision.EXPIRE), deadline - timedelta(seconds=3), deadline, None)
    assert expire.applied
    assert not judge(decision(Decision.APPROVE), deadline, deadline, expire).applied


def test_the_decision_log_follows_only_known_requests_and_forgets_on_request() -> None:
    deadlines = {"a" * 32: T0}
    log = DecisionLog(deadlines.get)
    assert log.apply(decision(Decision.APPROVE, request_id="b" * 32), T0) is None
    first = log.apply(decision(Decision.DENY, reason="no"), T0)
    assert first is not None and first.applied
    second = log.apply(decision(Decision.APPROVE), T0)
    assert second is not None and not second.applied
    assert log.winner("a" * 32) == first
    log.forget("a" * 32)
    assert log.winner("a" * 32) is None


def test_a_policy_left_out_keeps_old_digests_and_a_changed_policy_is_in_the_diff() -> None:
    model = ModelSpec(provider="openai", model="gpt-4o-mini")
    plain = AgentBundle(model=model, tools=(ToolSpec(name="refund"),))
    before = bundle_digest(plain)
    assert before == bundle_digest(AgentBundle.model_validate(plain.model_dump()))
    assert '"approval"' not in plain.model_dump_json(exclude_defaults=True)

    v1 = example_version("support-bot", "v1")

    def with_policy(label: str, policy: ApprovalPolicy | None) -> AgentVersion:
        bundle = v1.bundle.model_copy(update={"tools": (ToolSpec(name="refund", approval=policy),)})
        return v1.model_copy(
            update={"version": label, "bundle": bundle, "digest": bundle_digest(bundle)}
        )

    none, strict, looser = (
        with_policy("v1", None),
        with_policy("v2", ApprovalPolicy(when=(OVER_100,), timeout_s=600)),
        with_policy(
            "v3", ApprovalPolicy(when=(OVER_100.model_copy(update={"value": 500}),), timeout_s=600)
        ),
    )
    assert diff_versions(none, strict)[-6:] == [
        "tools:",
        "  changed: refund",
        '    approval.on_timeout: added "deny"',
        "    approval.redact: added []",
        "    approval.timeout_s: added 600",
        '    approval.when: added [{"field": "refund.amount", "op": ">", "value": 100}]',
    ]
    assert diff_versions(strict, looser)[-1] == "    approval.when.0.value: 100 → 500"
    assert "    approval.timeout_s: removed (was 600)" in diff_versions(looser, none)


def test_policies_are_bounded_and_strict() -> None:
    with pytest.raises(ValidationError):
        ApprovalPolicy(timeout_s=0)
    with pytest.raises(ValidationError):
        ArgumentCondition(field="a..b", op=Comparison.GT, value=1)
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate({"on_timeout": "maybe"})
