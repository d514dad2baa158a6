"""Per-(agent, version, window) aggregate: the detector's input and ``coalmine.version-stats``.

Every field is a count or a sum, so the partial rows that any number of workers emit for the
same window merge by addition (:meth:`WindowStats.merge`). Integer fields merge exactly; float
sums merge associatively up to floating-point rounding (relative error ~1e-15 per addition),
which is the same guarantee ClickHouse's ``sum()`` gives over the stored rows.

Latency is kept as a histogram on one fixed log-scale grid shared by every producer:
``LATENCY_BUCKETS_PER_DECADE`` buckets per factor of ten between ``LATENCY_MIN_MS`` and
``LATENCY_MAX_MS`` (ratio 10^(1/25) ≈ 1.0965 ≤ 1.1 between bucket edges), one underflow
bucket for [0, 1 ms] and one overflow bucket above 1,000,000 ms (16.7 min).
:func:`quantile_from_buckets` returns the geometric midpoint of the bucket holding the
quantile, so for latencies inside the grid its relative error is at most
``QUANTILE_MAX_RELATIVE_ERROR`` = sqrt(10^(1/25)) - 1 ≈ 4.7 %.

Cost enters per span and per request, each as raw sums and as sums of ``log_cost(c)`` =
ln(c + ``LOG_COST_EPSILON_USD``), the heavy-tail-friendly scale the detector tests on; the
epsilon keeps zero-cost requests finite (ln(1e-6) ≈ -13.8). The per-span sums (``cost_*``,
``log_cost_*``) add up every priced span; the per-request sums (``request_cost_count``,
``request_cost_sum``, ``request_log_cost_*``) add up one total per priced request, which is
what the detector judges: an agent that loops into twice the llm calls at the same price per
call doubles the cost of a request but leaves the cost of a span as it was. How a request's
total is assembled from its spans is :mod:`streams.ingest.aggregate`'s rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Self

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.trace import Identifier

LATENCY_MIN_MS = 1.0
"""Upper edge of the underflow bucket 0, which holds [0, 1 ms]."""
LATENCY_BUCKETS_PER_DECADE = 25
LATENCY_DECADES = 6
LATENCY_MAX_MS = LATENCY_MIN_MS * 10.0**LATENCY_DECADES
"""Upper edge of the last regular bucket; the overflow bucket holds everything above it."""
LATENCY_BUCKET_RATIO = 10.0 ** (1.0 / LATENCY_BUCKETS_PER_DECADE)
"""Ratio of consecutive bucket edges, ≈ 1.0965."""
LATENCY_BUCKET_COUNT = LATENCY_BUCKETS_PER_DECADE * LATENCY_DECADES + 2
"""152: underflow, 150 regular buckets, overflow."""
QUANTILE_MAX_RELATIVE_ERROR = math.sqrt(LATENCY_BUCKET_RATIO) - 1.0
"""Bound on |estimate / true - 1| of :func:`quantile_from_buckets` inside the grid, ≈ 0.0471."""

LOG_COST_EPSILON_USD = 1e-6
"""Added to every cost before taking its log, so a zero-cost request contributes ln(1e-6)."""

MERGED_SOURCE = "merged"
"""``source`` of a merge of partials that came from more than one producer."""

_MAX_COUNT = 2**62
Count = Annotated[int, Field(ge=0, le=_MAX_COUNT)]
NonNegativeSum = Annotated[float, Field(ge=0.0)]
# A worker's source is "<topic>/<partition>@<offset>"; Kafka topic names reach 249 chars.
Source = Annotated[str, StringConstraints(min_length=1, max_length=300)]

COUNT_FIELDS = (
    "requests",
    "errors",
    "tasks_attempted",
    "tasks_completed",
    "tool_calls",
    "tool_errors",
    "llm_calls",
    "guardrail_blocks",
    "input_tokens",
    "output_tokens",
    "cost_count",
    "request_cost_count",
    "quality_count",
    "approvals_asked",
)
"""Integer measures: partials add up exactly."""
SUM_FIELDS = (
    "cost_sum",
    "cost_sumsq",
    "log_cost_sum",
    "log_cost_sumsq",
    "request_cost_sum",
    "request_log_cost_sum",
    "request_log_cost_sumsq",
    "quality_sum",
    "quality_sumsq",
    "latency_sum_ms",
)
"""Float measures: partials add up to floating-point rounding."""


def latency_bucket_index(ms: float) -> int:
    """Index of the bucket holding a latency of ``ms`` milliseconds.

    Bucket 0 is [0, 1 ms]; bucket i in 1..150 is (10^((i-1)/25), 10^(i/25)] ms; bucket 151
    is everything above 10^6 ms. Raises ``ValueError`` for negative or non-finite input.
    """
    if not math.isfinite(ms) or ms < 0.0:
        raise ValueError(f"latency must be a finite non-negative number of ms, got {ms!r}")
    if ms <= LATENCY_MIN_MS:
        return 0
    if ms > LATENCY_MAX_MS:
        return LATENCY_BUCKET_COUNT - 1
    index = math.ceil(LATENCY_BUCKETS_PER_DECADE * math.log10(ms / LATENCY_MIN_MS) - 1e-9)
    # Guard the rounding at exact edges so that bucket_upper_ms(i - 1) < ms <= bucket_upper_ms(i).
    if ms <= bucket_upper_ms(index - 1):
        index -= 1
    elif ms > bucket_upper_ms(index):
        index += 1
    return max(1, min(index, LATENCY_BUCKET_COUNT - 2))


def latency_bucket_indices(ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Vectorised :func:`latency_bucket_index` (edges may differ by one ulp from the scalar)."""
    values = np.asarray(ms, dtype=np.float64)
    if values.size and (not np.all(np.isfinite(values)) or np.any(values < 0.0)):
        raise ValueError("latencies must be finite and non-negative")
    safe = np.maximum(values, LATENCY_MIN_MS)
    raw = np.ceil(LATENCY_BUCKETS_PER_DECADE * np.log10(safe / LATENCY_MIN_MS) - 1e-9)
    index = np.clip(raw, 0, LATENCY_BUCKET_COUNT - 1).astype(np.int64)
    index[values <= LATENCY_MIN_MS] = 0
    index[values > LATENCY_MAX_MS] = LATENCY_BUCKET_COUNT - 1
    return index


def latency_histogram(ms: npt.ArrayLike) -> list[int]:
    """Counts per bucket of the latencies ``ms`` (a fixed-length list of plain ints)."""
    counts = np.bincount(latency_bucket_indices(ms), minlength=LATENCY_BUCKET_COUNT)
    return [int(c) for c in counts]


def bucket_upper_ms(i: int) -> float:
    """Upper edge of bucket ``i`` in ms (``inf`` for the overflow bucket)."""
    if not 0 <= i < LATENCY_BUCKET_COUNT:
        raise ValueError(f"bucket index must be in [0, {LATENCY_BUCKET_COUNT}), got {i}")
    if i == LATENCY_BUCKET_COUNT - 1:
        return math.inf
    return LATENCY_MIN_MS * math.pow(10.0, i / LATENCY_BUCKETS_PER_DECADE)


def bucket_lower_ms(i: int) -> float:
    """Lower edge of bucket ``i`` in ms (0 for the underflow bucket)."""
    if not 0 <= i < LATENCY_BUCKET_COUNT:
        raise ValueError(f"bucket index must be in [0, {LATENCY_BUCKET_COUNT}), got {i}")
    return 0.0 if i == 0 else bucket_upper_ms(i - 1)


def bucket_representative_ms(i: int) -> float:
    """The value reported for bucket ``i``: the geometric midpoint of its edges; the underflow
    bucket reports ``LATENCY_MIN_MS`` and the overflow bucket ``LATENCY_MAX_MS``."""
    if i == 0:
        return LATENCY_MIN_MS
    if i == LATENCY_BUCKET_COUNT - 1:
        return LATENCY_MAX_MS
    return math.sqrt(bucket_lower_ms(i) * bucket_upper_ms(i))


def quantile_bucket(buckets: Sequence[int], q: float) -> int:
    """Index of the bucket holding the ``q``-quantile: the smallest i whose cumulative count
    reaches max(1, ceil(q·n)). Raises ``ValueError`` for an empty histogram or q ∉ [0, 1]."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    counts = np.asarray(buckets, dtype=np.int64)
    total = int(counts.sum())
    if total <= 0:
        raise ValueError("quantile of an empty histogram")
    rank = max(1, math.ceil(q * total - 1e-9))
    return int(np.searchsorted(np.cumsum(counts), rank, side="left"))


def quantile_from_buckets(buckets: Sequence[int], q: float) -> float:
    """The ``q``-quantile (lower, rank ceil(q·n)) of the latencies a histogram holds, in ms.

    For a quantile inside [1 ms, 10^6 ms] the relative error against the exact sample
    quantile is at most ``QUANTILE_MAX_RELATIVE_ERROR`` (≈ 4.7 %); outside it the result is
    clamped to the grid's ends.
    """
    return bucket_representative_ms(quantile_bucket(buckets, q))


def log_cost(cost_usd: float) -> float:
    """ln(cost + ``LOG_COST_EPSILON_USD``): the per-request value behind ``log_cost_sum``."""
    return math.log(cost_usd + LOG_COST_EPSILON_USD)


class WindowStats(BaseModel):
    """Counts and sums for one (agent, version, window) from one producer (``source``).

    ``requests`` counts request (root) spans; each has exactly one latency in
    ``latency_buckets``, so the histogram sums to ``requests``. ``cost_count`` counts the
    priced spans (a reported cost, or tokens to price) whatever their kind; the sums of
    ``cost_*`` and ``log_cost_*`` run over those, so ``cost_sum / requests`` is the cost per
    request. ``request_cost_count`` counts the priced requests, each with the total cost of
    its priced spans that arrived with it (at most ``requests``); ``request_cost_sum`` and
    ``request_log_cost_*`` run over those totals. ``quality_count`` spans carried a quality
    score in [0, 1]. ``approvals_asked`` adds up the requests' tool calls their version's policy
    held for a person's approval (a request may ask several times). Rows written before the
    per-request fields existed read them as 0.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={"$id": "https://coalmine.dev/schemas/window-stats.schema.json"},
    )

    agent: Identifier
    version: Identifier
    window_start: AwareDatetime
    window_seconds: Annotated[int, Field(gt=0, le=86_400)]
    source: Source

    requests: Count = 0
    errors: Count = 0
    tasks_attempted: Count = 0
    tasks_completed: Count = 0
    tool_calls: Count = 0
    tool_errors: Count = 0
    llm_calls: Count = 0
    guardrail_blocks: Count = 0
    input_tokens: Count = 0
    output_tokens: Count = 0

    cost_count: Count = 0
    cost_sum: NonNegativeSum = 0.0
    cost_sumsq: NonNegativeSum = 0.0
    log_cost_sum: float = 0.0
    log_cost_sumsq: NonNegativeSum = 0.0

    request_cost_count: Count = 0
    request_cost_sum: NonNegativeSum = 0.0
    request_log_cost_sum: float = 0.0
    request_log_cost_sumsq: NonNegativeSum = 0.0

    quality_count: Count = 0
    quality_sum: NonNegativeSum = 0.0
    quality_sumsq: NonNegativeSum = 0.0

    approvals_asked: Count = 0

    latency_sum_ms: NonNegativeSum = 0.0
    latency_buckets: Annotated[
        list[Count], Field(min_length=LATENCY_BUCKET_COUNT, max_length=LATENCY_BUCKET_COUNT)
    ] = Field(default_factory=lambda: [0] * LATENCY_BUCKET_COUNT)

    @field_validator("window_start")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        for part, whole in (
            ("errors", "requests"),
            ("tasks_completed", "tasks_attempted"),
            ("tool_errors", "tool_calls"),
            ("request_cost_count", "requests"),
        ):
            if getattr(self, part) > getattr(self, whole):
                raise ValueError(f"{part} exceeds {whole}")
        if sum(self.latency_buckets) != self.requests:
            raise ValueError("latency_buckets must sum to requests")
        if self.cost_count == 0 and (self.cost_sum or self.log_cost_sum or self.log_cost_sumsq):
            raise ValueError("cost sums are set but cost_count is 0")
        if self.request_cost_count == 0 and (
            self.request_cost_sum or self.request_log_cost_sum or self.request_log_cost_sumsq
        ):
            raise ValueError("request cost sums are set but request_cost_count is 0")
        if self.quality_sum > self.quality_count * (1.0 + 1e-9):
            raise ValueError("quality_sum exceeds quality_count (scores are in [0, 1])")
        return self

    @property
    def window_end(self) -> datetime:
        return self.window_start + timedelta(seconds=self.window_seconds)

    @classmethod
    def empty(
        cls, agent: str, version: str, window_start: datetime, window_seconds: int, source: str
    ) -> WindowStats:
        """The identity of :meth:`merge` for this window and source."""
        return cls(
            agent=agent,
            version=version,
            window_start=window_start,
            window_seconds=window_seconds,
            source=source,
        )

    def merge(self, other: WindowStats) -> WindowStats:
        """The sum of two partials of the same (agent, version, window_start, window_seconds).

        Associative and commutative (float sums up to rounding). The result keeps ``source``
        when both partials share it, else it is ``MERGED_SOURCE``; ``empty(..., source=s)``
        is an exact identity for partials from ``s``. Raises ``ValueError`` for partials of
        different windows or versions.
        """
        key = (self.agent, self.version, self.window_start, self.window_seconds)
        other_key = (other.agent, other.version, other.window_start, other.window_seconds)
        if key != other_key:
            raise ValueError(f"cannot merge window stats of {key} with {other_key}")
        values: dict[str, object] = {
            name: getattr(self, name) + getattr(other, name) for name in COUNT_FIELDS
        }
        values.update({name: getattr(self, name) + getattr(other, name) for name in SUM_FIELDS})
        values["latency_buckets"] = [
            a + b for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)
        ]
        source = self.source if self.source == other.source else MERGED_SOURCE
        return WindowStats.model_validate(
            {
                "agent": self.agent,
                "version": self.version,
                "window_start": self.window_start,
                "window_seconds": self.window_seconds,
                "source": source,
                **values,
            }
        )

    @classmethod
    def from_arrays(
        cls,
        *,
        agent: str,
        version: str,
        window_start: datetime,
        window_seconds: int,
        source: str,
        latency_ms: npt.ArrayLike,
        error: npt.ArrayLike | None = None,
        cost_usd: npt.ArrayLike | None = None,
        request_cost_usd: npt.ArrayLike | None = None,
        quality: npt.ArrayLike | None = None,
        task_completed: npt.ArrayLike | None = None,
        tool_calls: int = 0,
        tool_errors: int = 0,
        llm_calls: int = 0,
        guardrail_blocks: int = 0,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> WindowStats:
        """Build a window from per-request arrays (the simulator's helper).

        ``latency_ms`` has one entry per request; ``error`` (bool, same length) marks failed
        requests; ``cost_usd`` holds the costs of the priced spans; ``request_cost_usd`` the
        cost totals of the priced requests; ``quality`` holds quality scores;
        ``task_completed`` holds one bool per attempted task.
        """
        latency = np.asarray(latency_ms, dtype=np.float64)
        cost = _costs(cost_usd)
        log_costs = np.log(cost + LOG_COST_EPSILON_USD)
        totals = _costs(request_cost_usd)
        log_totals = np.log(totals + LOG_COST_EPSILON_USD)
        scores = np.asarray([] if quality is None else quality, dtype=np.float64)
        tasks = np.asarray([] if task_completed is None else task_completed, dtype=bool)
        errors = np.asarray([] if error is None else error, dtype=bool)
        if error is not None and errors.shape != latency.shape:
            raise ValueError("error must have one entry per request (same length as latency_ms)")
        if scores.size and not (np.all(scores >= 0.0) and np.all(scores <= 1.0)):
            raise ValueError("quality scores must be in [0, 1]")
        return cls(
            agent=agent,
            version=version,
            window_start=window_start,
            window_seconds=window_seconds,
            source=source,
            requests=int(latency.size),
            errors=int(errors.sum()),
            tasks_attempted=int(tasks.size),
            tasks_completed=int(tasks.sum()),
            tool_calls=tool_calls,
            tool_errors=tool_errors,
            llm_calls=llm_calls,
            guardrail_blocks=guardrail_blocks,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_count=int(cost.size),
            cost_sum=float(cost.sum()),
            cost_sumsq=float(np.square(cost).sum()),
            log_cost_sum=float(log_costs.sum()),
            log_cost_sumsq=float(np.square(log_costs).sum()),
            request_cost_count=int(totals.size),
            request_cost_sum=float(totals.sum()),
            request_log_cost_sum=float(log_totals.sum()),
            request_log_cost_sumsq=float(np.square(log_totals).sum()),
            quality_count=int(scores.size),
            quality_sum=float(scores.sum()),
            quality_sumsq=float(np.square(scores).sum()),
            latency_sum_ms=float(latency.sum()),
            latency_buckets=latency_histogram(latency),
        )


def _costs(values: npt.ArrayLike | None) -> npt.NDArray[np.float64]:
    cost = np.asarray([] if values is None else values, dtype=np.float64)
    if cost.size and (not np.all(np.isfinite(cost)) or np.any(cost < 0.0)):
        raise ValueError("costs must be finite and non-negative")
    return cost
