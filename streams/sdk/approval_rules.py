"""The pure rules of human approval, shared by the SDK, the command line and their tests:
whether a tool call must ask (:func:`asks`), what people see of its arguments
(:func:`redacted`), and which decision about a request counts (:func:`judge`,
:class:`DecisionLog`). No I/O, no clock: times are arguments.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from schemas.approval import MAX_ARGUMENTS_BYTES, ApprovalDecision, Decision
from schemas.version import ApprovalPolicy, ArgumentCondition, Comparison

REDACTED: Final = "[redacted]"
EVERY_CALL: Final = "every call"
_MISSING: Final = object()
_COMPARE: Final[dict[Comparison, Callable[[Any, Any], bool]]] = {
    Comparison.GT: operator.gt,
    Comparison.GE: operator.ge,
    Comparison.LT: operator.lt,
    Comparison.LE: operator.le,
    Comparison.EQ: operator.eq,
    Comparison.NE: operator.ne,
}


def _at(arguments: Any, path: str) -> Any:
    """The value at a dotted path (keys of objects, indexes of lists), or ``_MISSING``."""
    value = arguments
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


def _comparable(left: Any, right: Any) -> bool:
    """Numbers with numbers (not booleans), strings with strings, booleans with booleans."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return math.isfinite(left)
    return isinstance(left, str) and isinstance(right, str)


def holds(condition: ArgumentCondition, arguments: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds for ``arguments``; True when it cannot be told (the field is
    missing, or is not comparable with the limit): a policy fails closed."""
    value = _at(arguments, condition.field)
    if value is _MISSING or not _comparable(value, condition.value):
        return True
    return bool(_COMPARE[condition.op](value, condition.value))


def describe(condition: ArgumentCondition) -> str:
    return f"{condition.field} {condition.op.value} {json.dumps(condition.value)}"


def asks(policy: ApprovalPolicy | None, arguments: Mapping[str, Any]) -> str | None:
    """Why this call needs a person's approval (the condition that held), or None."""
    if policy is None:
        return None
    if not policy.when:
        return EVERY_CALL
    for condition in policy.when:
        if holds(condition, arguments):
            return describe(condition)
    return None


def redacted(arguments: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """``arguments`` as JSON values, each value at ``paths`` replaced by ``[redacted]``.
    Values JSON cannot hold (NaN, dates, objects) become their text; arguments larger than
    :data:`MAX_ARGUMENTS_BYTES` are replaced by a note of their size."""
    plain = json.loads(json.dumps(arguments, default=str, allow_nan=True), parse_constant=str)
    for path in paths:
        *parents, last = path.split(".")
        holder = _at(plain, ".".join(parents)) if parents else plain
        if isinstance(holder, dict) and last in holder:
            holder[last] = REDACTED
        elif isinstance(holder, list) and last.isdigit() and int(last) < len(holder):
            holder[int(last)] = REDACTED
    size = len(json.dumps(plain, separators=(",", ":")).encode())
    if size > MAX_ARGUMENTS_BYTES:
        return {"[too large]": f"{size} bytes"}
    result: dict[str, Any] = plain
    return result


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rule made of one decision: applied (it decides the request) or refused."""

    decision: ApprovalDecision
    appended_at: datetime
    applied: bool
    refusal: str = ""


def judge(
    decision: ApprovalDecision,
    appended_at: datetime,
    deadline: datetime,
    winner: Verdict | None,
) -> Verdict:
    """The one rule, applied to decisions in log order: a request's first decision wins when
    it is an ``expire`` or the broker appended it (``appended_at``) no later than the
    request's ``deadline``; ``winner`` is the decision that won before, if any."""
    if winner is not None:
        first = winner.decision
        return Verdict(
            decision,
            appended_at,
            applied=False,
            refusal=f"already decided: {first.decision.value} by {first.decided_by}",
        )
    if decision.decision is not Decision.EXPIRE and appended_at > deadline:
        late = (appended_at - deadline).total_seconds()
        return Verdict(
            decision,
            appended_at,
            applied=False,
            refusal=f"after the deadline ({deadline:%Y-%m-%d %H:%M:%S} UTC, {late:.1f} s late)",
        )
    return Verdict(decision, appended_at, applied=True)


class DecisionLog:
    """The decisions of one decision log folded by :func:`judge`, request by request.
    ``deadline_of(request_id)`` gives a request's deadline, or None for a request this
    reader does not follow (its decisions are passed over)."""

    def __init__(self, deadline_of: Callable[[str], datetime | None]) -> None:
        self._deadline_of = deadline_of
        self._winners: dict[str, Verdict] = {}

    def apply(self, decision: ApprovalDecision, appended_at: datetime) -> Verdict | None:
        deadline = self._deadline_of(decision.request_id)
        if deadline is None:
            return None
        verdict = judge(decision, appended_at, deadline, self._winners.get(decision.request_id))
        if verdict.applied:
            self._winners[decision.request_id] = verdict
        return verdict

    def winner(self, request_id: str) -> Verdict | None:
        return self._winners.get(request_id)

    def forget(self, request_id: str) -> None:
        self._winners.pop(request_id, None)
