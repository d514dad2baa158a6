"""Map-side tumbling windows: span rows in, partial :class:`WindowStats` rows out.

Each worker aggregates the Kafka partitions it owns; nothing here does I/O or reads a clock.

**What a window counts.** A span belongs to the window holding its ``end_time`` (when the work
finished, which is also when the SDK sends it). Request-level figures (requests, errors,
latency, task outcomes, approvals asked: the request span's ``coalmine.approvals_asked``)
come from ``request`` spans; tool calls and tool errors from ``tool``
spans; llm calls from ``llm`` spans; a ``guardrail`` span with status ``error`` is a block;
tokens and cost add up over every span; quality over every span that carries a score. The
cost moments (``cost_count`` and the sums) run over *priced* spans: those with a reported
cost or with tokens to price.

**Cost per request.** A request's cost total is the sum of the priced costs of the spans of
its trace that arrive in the same Kafka message as its request span (:func:`request_costs`).
The SDK holds a request's spans until the request ends and sends them in one message
(:mod:`streams.sdk.batching`), so normally that is the whole request. Spans of the trace that
arrive in another message (a request with more spans than a message holds, spans held past
the SDK's hold time, producers that send spans one by one) still count in the per-span sums
but in no request's total; a request whose message holds no priced span of its trace is not
a priced request. The total counts once, in the window and row of the request span, in
``request_cost_count`` and the ``request_*`` sums; when a message holds several request spans
of one trace (a nested agent invocation, a span sent twice), of the last of them: the trace's
root, which ends last and which the SDK puts after its children. The rule reads only what
is fixed once a message is on its partition, the spans it carries, so a replay after a crash
assembles the same totals; only stored spans count (a duplicate of a span stored from
another message counts where it is stored), so SQL recomputes the totals from
``coalmine.spans`` by grouping on (``kafka_partition``, ``kafka_offset``, ``trace_id``).

**When a window is emitted.** A window closes ``allowed_lateness_s`` after its end, by the
worker's clock; its row is emitted at the first :meth:`WindowAggregator.due` call after that.
A span that arrives for a window already emitted is still stored and is counted in a
*correction* row (``late``) for that window. Corrections gather until the next close time on
the same grid as the windows' (``k * window_seconds + allowed_lateness_s``), so a worker
catching up on a backlog, where every span is late, writes all its rows once per window
length rather than at every batch: each write costs an insert, whatever its size.

**Exactness.** Rows are identified by (partition, window, ``offset_from`` and the index of
their first span in that message: a message may carry a batch of spans) and cover a range
of the partition's offsets for their window. The adapter acknowledges a Kafka message only
once every row counting it is stored, so after a crash the messages of unstored rows are
delivered again, while those of stored rows may be too (a crash between store and commit).
On (re)assignment of a partition the adapter loads, per window, the end of the stored
offset ranges (:meth:`WindowAggregator.load_coverage`); a redelivered span below it was
already counted and is skipped. Rows are built deterministically from the partition's
messages in offset order, so a row re-emitted after a crash has the identity of the one it
replaces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from schemas.trace import APPROVALS_ASKED_ATTRIBUTE
from schemas.window_stats import (
    LATENCY_BUCKET_COUNT,
    LOG_COST_EPSILON_USD,
    WindowStats,
    latency_bucket_index,
)
from streams.ingest.route import Owner, SpanRow, position

T = TypeVar("T")

WindowKey = tuple[str, str, int]
"""(agent, version, window start in epoch seconds)."""


def window_start_of(end_time: datetime, window_seconds: int) -> int:
    """Epoch second at which the window holding ``end_time`` starts."""
    return math.floor(end_time.timestamp() / window_seconds) * window_seconds


def is_priced(row: SpanRow) -> bool:
    """Whether a span row's cost is a real figure: reported, or computed from its tokens."""
    source = row.cost_source
    if source == "reported":
        return True
    return source == "price_table" and bool(row.input_tokens or row.output_tokens)


def request_costs(rows: Iterable[SpanRow]) -> dict[Owner, float]:
    """The cost totals of the priced requests among the rows of whole messages, keyed by the
    position of the request span each is counted with (the module's rule)."""
    heads: dict[tuple[int, int, str], Owner] = {}
    totals: dict[tuple[int, int, str], float] = {}
    for row in rows:
        group = (row.kafka_partition, row.kafka_offset, row.trace_id)
        if row.kind == "request":
            head = heads.get(group)
            if head is None or row.kafka_index > head[2]:
                heads[group] = position(row)
        if is_priced(row):
            totals[group] = totals.get(group, 0.0) + float(row.cost_usd)
    return {heads[group]: total for group, total in totals.items() if group in heads}


@dataclass(slots=True)
class WindowAccumulator:
    """Mutable running sums of one window; :meth:`to_stats` freezes them."""

    requests: int = 0
    errors: int = 0
    tasks_attempted: int = 0
    tasks_completed: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    llm_calls: int = 0
    guardrail_blocks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_count: int = 0
    cost_sum: float = 0.0
    cost_sumsq: float = 0.0
    log_cost_sum: float = 0.0
    log_cost_sumsq: float = 0.0
    request_cost_count: int = 0
    request_cost_sum: float = 0.0
    request_log_cost_sum: float = 0.0
    request_log_cost_sumsq: float = 0.0
    quality_count: int = 0
    quality_sum: float = 0.0
    quality_sumsq: float = 0.0
    approvals_asked: int = 0
    latency_sum_ms: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKET_COUNT)

    def add(self, row: SpanRow, request_cost: float | None = None) -> None:
        """Count one span row; ``request_cost``: the cost total of the priced request a
        request row is counted with (:func:`request_costs`)."""
        kind = row.kind
        failed = row.status == "error"
        if kind == "request":
            if request_cost is not None:
                log_total = math.log(request_cost + LOG_COST_EPSILON_USD)
                self.request_cost_count += 1
                self.request_cost_sum += request_cost
                self.request_log_cost_sum += log_total
                self.request_log_cost_sumsq += log_total * log_total
            self.requests += 1
            self.errors += failed
            asked = row.attributes.get(APPROVALS_ASKED_ATTRIBUTE)
            if asked is not None:  # an integer: TraceEvent validated it
                self.approvals_asked += int(asked)
            duration = float(row.duration_ms)
            self.latency_sum_ms += duration
            self.latency_buckets[latency_bucket_index(duration)] += 1
            task = row.task_completed
            if task is not None:
                self.tasks_attempted += 1
                self.tasks_completed += bool(task)
        elif kind == "tool":
            self.tool_calls += 1
            self.tool_errors += failed
        elif kind == "llm":
            self.llm_calls += 1
        elif kind == "guardrail":
            self.guardrail_blocks += failed
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        if is_priced(row):
            cost = float(row.cost_usd)
            log_cost = math.log(cost + LOG_COST_EPSILON_USD)
            self.cost_count += 1
            self.cost_sum += cost
            self.cost_sumsq += cost * cost
            self.log_cost_sum += log_cost
            self.log_cost_sumsq += log_cost * log_cost
        quality = row.quality_score
        if quality is not None:
            score = float(quality)
            self.quality_count += 1
            self.quality_sum += score
            self.quality_sumsq += score * score

    def to_stats(self, key: WindowKey, window_seconds: int, source: str) -> WindowStats:
        agent, version, start = key
        return WindowStats(
            agent=agent,
            version=version,
            window_start=datetime.fromtimestamp(start, UTC),
            window_seconds=window_seconds,
            source=source,
            requests=self.requests,
            errors=self.errors,
            tasks_attempted=self.tasks_attempted,
            tasks_completed=self.tasks_completed,
            tool_calls=self.tool_calls,
            tool_errors=self.tool_errors,
            llm_calls=self.llm_calls,
            guardrail_blocks=self.guardrail_blocks,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_count=self.cost_count,
            cost_sum=self.cost_sum,
            cost_sumsq=self.cost_sumsq,
            log_cost_sum=self.log_cost_sum,
            log_cost_sumsq=self.log_cost_sumsq,
            request_cost_count=self.request_cost_count,
            request_cost_sum=self.request_cost_sum,
            request_log_cost_sum=self.request_log_cost_sum,
            request_log_cost_sumsq=self.request_log_cost_sumsq,
            quality_count=self.quality_count,
            quality_sum=self.quality_sum,
            quality_sumsq=self.quality_sumsq,
            approvals_asked=self.approvals_asked,
            latency_sum_ms=self.latency_sum_ms,
            latency_buckets=list(self.latency_buckets),
        )


@dataclass(frozen=True)
class WindowRow:
    """One emitted partial: the stats plus where in Kafka they came from."""

    stats: WindowStats
    topic: str
    partition: int
    offset_from: int
    offset_until: int
    late: bool


VERSION_STATS_COLUMNS: tuple[str, ...] = (
    *WindowStats.model_fields,
    "kafka_topic",
    "kafka_partition",
    "offset_from",
    "offset_until",
    "late",
)
"""The columns of ``coalmine.version_stats`` a worker writes: the stats, then where from."""


def version_stats_row(row: WindowRow) -> list[Any]:
    """The ``coalmine.version_stats`` row of an emitted partial, in column order."""
    values = row.stats.model_dump()
    values.update(
        kafka_topic=row.topic,
        kafka_partition=row.partition,
        offset_from=row.offset_from,
        offset_until=row.offset_until,
        late=row.late,
    )
    return [values[name] for name in VERSION_STATS_COLUMNS]


def row_source(topic: str, partition: int, offset_from: int, index_from: int = 0) -> str:
    """The ``source`` of a partial: unique per row, stable across re-emission. A row begins
    at a span: the message at ``offset_from``, the span at ``index_from`` in it (a batch's
    spans may begin rows of several windows; ``#index`` is written only past the first)."""
    suffix = f"#{index_from}" if index_from else ""
    return f"{topic}/{partition}@{offset_from}{suffix}"


@dataclass
class _Pending(Generic[T]):
    sums: WindowAccumulator
    offset_from: int
    index_from: int
    offset_until: int
    late: bool
    due_at: float
    tokens: list[tuple[int, T]] = field(default_factory=list)
    """(offset, token) of each message counted here, once per message."""


@dataclass(frozen=True)
class Flush(Generic[T]):
    """Rows to store, and the tokens (Kafka messages) to acknowledge once they are stored."""

    rows: list[WindowRow]
    tokens: list[T]


class WindowAggregator(Generic[T]):
    """The open windows of the partitions of one topic this worker owns.

    ``T`` is whatever the adapter needs to acknowledge a message later (a Faust event).
    """

    def __init__(self, topic: str, window_seconds: int, allowed_lateness_s: float) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if allowed_lateness_s < 0:
            raise ValueError(f"allowed_lateness_s must be >= 0, got {allowed_lateness_s}")
        self.topic = topic
        self.window_seconds = window_seconds
        self.allowed_lateness_s = allowed_lateness_s
        self._pending: dict[int, dict[WindowKey, _Pending[T]]] = {}
        self._coverage: dict[int, dict[WindowKey, int]] = {}
        self._holding: dict[tuple[int, int], int] = {}
        """Per (partition, offset) of a held message: how many open windows count it (the
        spans of a batch may fall in several)."""

    def close_time(self, window_start: int) -> float:
        """Epoch second after which the window's row is emitted and later spans are late."""
        return window_start + self.window_seconds + self.allowed_lateness_s

    def _next_close(self, now: float) -> float:
        """The first close time of any window after ``now``."""
        periods = math.floor((now - self.allowed_lateness_s) / self.window_seconds) + 1
        return periods * self.window_seconds + self.allowed_lateness_s

    def has_coverage(self, partition: int) -> bool:
        return partition in self._coverage

    def load_coverage(self, partition: int, stored_until: Mapping[WindowKey, int]) -> None:
        """Per window, one past the last offset the partition's stored rows count."""
        self._coverage[partition] = dict(stored_until)

    def add(
        self,
        partition: int,
        offset: int,
        row: SpanRow,
        token: T,
        now: float,
        *,
        request_cost: float | None = None,
    ) -> bool:
        """Count a stored span row (with ``request_cost`` as in :meth:`WindowAccumulator.add`);
        returns whether ``token`` is held until its row is stored.

        A span at or below its window's stored coverage was counted before a crash and is
        not held. Messages of a partition must come in offset order, and the spans of one
        message one after another, all before the next :meth:`due`; coverage must be loaded
        for the partition first. A message whose spans fall in several windows is held until
        the rows of all of them are stored: its token is released by the last.
        """
        key = (row.agent, row.version, window_start_of(row.end_time, self.window_seconds))
        if offset < self._coverage[partition].get(key, 0):
            return False
        windows = self._pending.setdefault(partition, {})
        pending = windows.get(key)
        if pending is None:
            close = self.close_time(key[2])
            late = now >= close
            due_at = self._next_close(now) if late else close
            pending = windows[key] = _Pending(
                WindowAccumulator(), offset, row.kafka_index, offset + 1, late, due_at
            )
        pending.sums.add(row, request_cost)
        pending.offset_until = offset + 1
        tokens = pending.tokens
        if not tokens or tokens[-1][0] != offset:  # the message's first span in this window
            tokens.append((offset, token))
            held = (partition, offset)
            self._holding[held] = self._holding.get(held, 0) + 1
        return True

    def due(self, now: float) -> Flush[T]:
        """Remove and return the windows whose close time has passed, and the corrections
        gathered for a window length."""
        rows: list[WindowRow] = []
        tokens: list[T] = []
        for partition, windows in self._pending.items():
            ready = [key for key, pending in windows.items() if now >= pending.due_at]
            for key in ready:
                pending = windows.pop(key)
                rows.append(self._row(partition, key, pending))
                tokens.extend(self._release(partition, pending.tokens))
        return Flush(rows, tokens)

    def _release(self, partition: int, tokens: list[tuple[int, T]]) -> list[T]:
        """The tokens of a window's messages that no other open window still holds."""
        free = []
        holding = self._holding
        for offset, token in tokens:
            held = (partition, offset)
            left = holding.pop(held) - 1
            if left:
                holding[held] = left
            else:
                free.append(token)
        return free

    def forget(self) -> None:
        """Drop every open window and all coverage (the partitions were revoked: their
        unacknowledged messages are delivered again from the committed offsets)."""
        self._pending.clear()
        self._coverage.clear()
        self._holding.clear()

    @property
    def open_windows(self) -> int:
        return sum(len(windows) for windows in self._pending.values())

    def _row(self, partition: int, key: WindowKey, pending: _Pending[T]) -> WindowRow:
        source = row_source(self.topic, partition, pending.offset_from, pending.index_from)
        return WindowRow(
            stats=pending.sums.to_stats(key, self.window_seconds, source),
            topic=self.topic,
            partition=partition,
            offset_from=pending.offset_from,
            offset_until=pending.offset_until,
            late=pending.late,
        )


def partitions_of(offsets: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Lowest offset per partition of (partition, offset) pairs."""
    lowest: dict[int, int] = {}
    for partition, offset in offsets:
        if offset < lowest.get(partition, offset + 1):
            lowest[partition] = offset
    return lowest
