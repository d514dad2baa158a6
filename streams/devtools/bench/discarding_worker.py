"""A worker whose span sink discards the rows: Faust, validation and pricing without ClickHouse.

``coalmine bench ingest`` runs it as a child process beside the real worker, so the report
can say how much of the worker's time is Faust's and how much is ours.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from streams.ingest.route import SpanRow, SpanWrite
from streams.runtime import worker
from streams.settings import Settings


class DiscardingSpans:
    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        return SpanWrite.all_new(rows)


if __name__ == "__main__":
    sys.exit(worker.run(Settings.from_env(), spans=DiscardingSpans()))
