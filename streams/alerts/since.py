"""``--since``: a moment as an ISO time or as a duration back from now, pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_BACK: Final = timedelta(days=36_500)
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)([smhdw])")


def parse_since(text: str, now: datetime) -> datetime:
    """``10m``, ``2h``, ``1.5d`` (seconds, minutes, hours, days, weeks before ``now``) or an
    ISO time (``2026-12-02T13:00:00Z``; without a zone: UTC). :class:`ValueError` with one
    readable line otherwise."""
    text = text.strip()
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        seconds = float(duration.group(1)) * UNITS[duration.group(2)]
        if seconds > MAX_BACK.total_seconds():
            raise ValueError(f"{text!r} is further back than {MAX_BACK.days:,} days")
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 10m, 2h, 3d, 1w) nor an ISO time "
            "(2026-12-02T13:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
