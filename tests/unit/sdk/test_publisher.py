"""Pure parts of the SDK transport: the stats arithmetic."""

from __future__ import annotations

from streams.sdk.publisher import PublisherStats


def test_pending_is_what_is_neither_delivered_nor_failed() -> None:
    stats = PublisherStats(published=10, delivered=6, failed=1, dropped=3)
    assert stats.pending == 3
