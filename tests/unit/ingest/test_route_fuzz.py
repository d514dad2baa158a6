"""Property-based fuzzing of decoding and routing (Hypothesis, bounded examples): whatever
bytes arrive, routing never raises, every message ends up stored or rejected exactly once,
and whatever is stored satisfies the invariants the tables and the terminal rely on."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.trace import UNPRINTABLE as UNPRINTABLE_CHARS
from streams.ingest.route import RawMessage, SpanRow, route
from tests.unit.ingest.test_route import BOUNDS, PRICES, event

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNPRINTABLE = re.compile(f"[{UNPRINTABLE_CHARS}]")
IDENTIFIERS = ("agent", "version", "environment", "tenant", "name", "provider", "model")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def route_one(value: bytes | None) -> tuple[list[SpanRow], list[Any]]:
    routed = route([RawMessage("coalmine.traces", 0, 7, b"k", value)], PRICES, BOUNDS)
    assert len(routed.rows) + len(routed.rejected) == 1
    return routed.rows, routed.rejected


def assert_storable(row: SpanRow) -> None:
    assert BOUNDS.earliest_start <= row.start_time <= row.end_time
    assert row.end_time <= BOUNDS.latest_end
    for name in IDENTIFIERS:
        text = getattr(row, name)
        assert not UNPRINTABLE.search(text), (name, text)
    event_id = row.event_id
    assert isinstance(event_id, uuid.UUID) and event_id.int != 0
    assert 0 <= row.cached_input_tokens <= row.input_tokens <= 10**8


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_routed_without_raising(value: bytes) -> None:
    rows, rejected = route_one(value)
    for row in rows:
        assert_storable(row)
    assert all(r.reason for r in rejected)


@FUZZ
@given(
    st.sampled_from([*sorted(event().keys()), "attributes", "tenant", "cost_usd", "extra"]),
    json_values,
)
def test_any_value_in_any_field_is_stored_valid_or_rejected_with_a_reason(
    field: str, value: Any
) -> None:
    fields = event(kind="request")
    fields[field] = value
    rows, rejected = route_one(json.dumps(fields).encode())
    if rows:
        assert_storable(rows[0])
    else:
        assert rejected[0].reason


@FUZZ
@given(st.text(max_size=30), st.text(max_size=30))
def test_names_are_stored_only_when_printable(agent: str, version: str) -> None:
    rows, _ = route_one(json.dumps(event(agent=agent, version=version)).encode())
    stored = bool(rows)
    printable = all(n.strip() and not UNPRINTABLE.search(n) for n in (agent, version))
    assert stored == (printable and len(agent) <= 128 and len(version) <= 128)


@FUZZ
@given(st.data())
def test_a_valid_message_cut_or_spliced_anywhere_never_raises(data: st.DataObject) -> None:
    value = json.dumps(event(attributes={"a": 1, "b": "x"})).encode()
    cut = data.draw(st.integers(0, len(value)))
    # Without a newline: a newline makes the message a batch of lines, each routed on its own.
    insert = data.draw(st.binary(max_size=6).filter(lambda b: b"\n" not in b))
    rows, _ = route_one(value[:cut] + insert + value[cut + len(insert) :])
    if rows:
        assert_storable(rows[0])
