"""``--since``: durations back from now, ISO times, one-line refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.alerts.since import parse_since

NOW = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1.5d", timedelta(hours=36)),
        ("1w", timedelta(days=7)),
        (" 0s ", timedelta(0)),
    ],
)
def test_a_duration_is_back_from_now(text: str, back: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - back


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-12-02T12:00:00Z", datetime(2026, 12, 2, 12, tzinfo=UTC)),
        ("2026-12-02T13:00:00+01:00", datetime(2026, 12, 2, 12, tzinfo=UTC)),
        ("2026-12-02 12:30", datetime(2026, 12, 2, 12, 30, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_an_iso_time_is_that_moment(text: str, moment: datetime) -> None:
    assert parse_since(text, NOW) == moment


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10 minutes", "neither a duration"),
        ("-5m", "neither a duration"),
        ("5y", "neither a duration"),
        ("nan", "neither a duration"),
        ("", "neither a duration"),
        ("99999999999d", "further back than 36,500 days"),
    ],
)
def test_anything_else_is_one_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        parse_since(text, NOW)
    assert "\n" not in str(refused.value)
