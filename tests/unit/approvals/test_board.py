"""The approval topics folded into what a person reads, without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.approval import Decision
from streams.approvals.board import Board, request_line, verdict_line
from streams.devtools.control_records import approval_decision, approval_request
from streams.sdk.compacted import Record

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def record(value: str, at: datetime, offset: int = 0) -> Record:
    return Record("t", None, value.encode(), 0, offset, int(at.timestamp() * 1000))


def test_requests_are_listed_pending_then_with_what_came_of_them() -> None:
    board = Board(lambda: T0)
    waiting = approval_request("support-bot", asked_at=T0, timeout_s=60)
    decided = approval_request("support-bot", asked_at=T0, timeout_s=60)
    other = approval_request("billing-bot", asked_at=T0, timeout_s=60)
    board.add_requests(
        [record(r.model_dump_json(), T0, i) for i, r in enumerate((waiting, decided, other))]
    )
    deny = approval_decision(decided, Decision.DENY, reason="duplicate order")
    ((entry, verdict),) = board.add_decisions([record(deny.model_dump_json(), T0)])
    assert verdict.applied
    assert verdict_line(entry, verdict) == (f"{decided.id}  deny by ana: applied (duplicate order)")
    now = T0 + timedelta(seconds=15)
    assert [e.request.id for e in board.listed(now, agent="support-bot", every=False)] == [
        waiting.id
    ]
    assert request_line(board.entries[waiting.id], now) == (
        f"{waiting.id}  support-bot v1  refund {{}}  pending  (every call; 45 s left, then deny)"
    )
    assert request_line(entry, now).endswith("denied  (every call; by ana: duplicate order)")
    later = T0 + timedelta(minutes=2)
    assert request_line(board.entries[waiting.id], later).endswith(
        "timed_out  (every call; nobody decided by 2026-01-01 12:01:00 UTC)"
    )
    assert len(board.listed(later, agent=None, every=True)) == 3


def test_a_decision_read_before_its_request_is_judged_once_the_request_is_read() -> None:
    board = Board(lambda: T0)
    request = approval_request("support-bot", asked_at=T0, timeout_s=60)
    first = approval_decision(request, Decision.APPROVE)
    late = approval_decision(request, Decision.DENY, decided_by="bo")
    assert (
        board.add_decisions(
            [
                record(first.model_dump_json(), T0 + timedelta(seconds=1), 0),
                record(late.model_dump_json(), T0 + timedelta(minutes=5), 1),
                record("{broken", T0, 2),
            ]
        )
        == []
    )
    board.add_requests([record(request.model_dump_json(), T0)])
    entry = board.entries[request.id]
    assert [(v.decision.id, v.applied) for v in entry.verdicts] == [
        (first.id, True),
        (late.id, False),
    ]
    assert entry.state(T0) == "granted"
    (skipped,) = board.skipped
    assert skipped.startswith("ApprovalDecision at offset 2: Invalid JSON")
