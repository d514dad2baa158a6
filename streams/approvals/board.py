"""The approval topics folded into what a person reads: every request with what came of it
(:class:`Board`), each decision with the rule's verdict, one line each. Pure: records in,
lines out; the rule is :func:`streams.sdk.approval_rules.judge`, the one the SDK applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeVar

from pydantic import ValidationError

from schemas.approval import OUTCOME_OF, ApprovalDecision, ApprovalRequest
from streams.sdk.approval_rules import DecisionLog, Verdict
from streams.sdk.approvals import appended_at
from streams.sdk.compacted import Record

MAX_SHOWN_ARGUMENTS: Final = 160
M = TypeVar("M", ApprovalRequest, ApprovalDecision)


@dataclass
class Entry:
    request: ApprovalRequest
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def winner(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.applied), None)

    def state(self, now: datetime) -> str:
        """``pending``, ``granted``, ``denied`` or ``timed_out`` (the deadline passed and
        nobody decided: any decision from now on is refused)."""
        winner = self.winner
        if winner is not None:
            return OUTCOME_OF[winner.decision.decision].value
        return "timed_out" if now > self.request.deadline else "pending"


class Board:
    """Requests by id and the decisions about them, in log order. Decisions about a request
    not read (yet) are kept aside until it is: the two topics are read one after the other."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.entries: dict[str, Entry] = {}
        self._log = DecisionLog(self._deadline_of)
        self._orphans: list[tuple[ApprovalDecision, datetime]] = []
        self.skipped: list[str] = []

    def _deadline_of(self, request_id: str) -> datetime | None:
        entry = self.entries.get(request_id)
        return None if entry is None else entry.request.deadline

    def add_requests(self, records: Iterable[Record]) -> list[Entry]:
        added = []
        for _, request in self._parsed(records, ApprovalRequest):
            if request.id not in self.entries:
                self.entries[request.id] = entry = Entry(request)
                added.append(entry)
        orphans, self._orphans = self._orphans, []
        for decision, at in orphans:
            self._decide(decision, at)
        return added

    def add_decisions(self, records: Iterable[Record]) -> list[tuple[Entry, Verdict]]:
        judged = []
        for record, decision in self._parsed(records, ApprovalDecision):
            if (verdict := self._decide(decision, appended_at(record, self._clock))) is not None:
                judged.append((self.entries[decision.request_id], verdict))
        return judged

    def _parsed(self, records: Iterable[Record], model: type[M]) -> Iterator[tuple[Record, M]]:
        """Each record's value as ``model``; one that is not is skipped, with a line why."""
        for record in records:
            try:
                yield record, model.model_validate_json(record.value or b"")
            except ValidationError as exc:
                why = exc.errors()[0]["msg"]
                self.skipped.append(f"{model.__name__} at offset {record.offset}: {why}")

    def _decide(self, decision: ApprovalDecision, at: datetime) -> Verdict | None:
        verdict = self._log.apply(decision, at)
        if verdict is None:
            self._orphans.append((decision, at))
            return None
        self.entries[decision.request_id].verdicts.append(verdict)
        return verdict

    def listed(self, now: datetime, *, agent: str | None, every: bool) -> list[Entry]:
        """Pending requests (``every``: all of them), oldest first."""
        return [
            entry
            for entry in sorted(self.entries.values(), key=lambda e: e.request.time)
            if (agent is None or entry.request.agent == agent)
            and (every or entry.state(now) == "pending")
        ]


def request_line(entry: Entry, now: datetime) -> str:
    """``ID  agent version  tool(arguments)  state  (why; time left or who decided)``."""
    request = entry.request
    arguments = json.dumps(request.arguments, ensure_ascii=False, sort_keys=True)
    if len(arguments) > MAX_SHOWN_ARGUMENTS:
        arguments = arguments[: MAX_SHOWN_ARGUMENTS - 1] + "…"
    state = entry.state(now)
    winner = entry.winner
    if state == "pending":
        detail = f"{(request.deadline - now).total_seconds():.0f} s left, then {request.on_timeout}"
    elif winner is not None:
        detail = f"by {winner.decision.decided_by}"
        if winner.decision.reason:
            detail += f": {winner.decision.reason}"
    else:
        detail = f"nobody decided by {request.deadline:%Y-%m-%d %H:%M:%S} UTC"
    return (
        f"{request.id}  {request.agent} {request.version}  {request.tool} {arguments}  "
        f"{state}  ({request.asks_because}; {detail})"
    )


def verdict_line(entry: Entry, verdict: Verdict) -> str:
    decision = verdict.decision
    done = "applied" if verdict.applied else f"refused, {verdict.refusal}"
    return f"{entry.request.id}  {decision.decision.value} by {decision.decided_by}: {done}" + (
        f" ({decision.reason})" if decision.reason else ""
    )
