from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from streams.errors import CoalmineError
from streams.ingest.pricing import CostSource, PriceTable, builtin_prices, load_prices

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PRICE_CUT = datetime(2025, 6, 10, tzinfo=UTC)
"""When the test table's ``acme/reasoner`` got cheaper (00:00 UTC)."""


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "provider": "acme",
        "model": "reasoner",
        "effective_from": "2025-06-10",
        "input": 2.0,
        "output": 8.0,
    }
    return base | fields


TABLE = PriceTable.parse(
    {
        "models": [
            # Out of date order on purpose: a history is sorted by effective_from, not position.
            entry(cached_input=0.5, reasoning=12.0),
            entry(effective_from="2025-04-16", input=10.0, output=40.0),
        ]
    },
    "test",
)


def cost_at(at: datetime, input_tokens: int = 1_000_000, output_tokens: int = 0) -> float:
    cost, source = TABLE.price(None, "acme", "reasoner", input_tokens, output_tokens, at=at)
    assert source is CostSource.PRICE_TABLE
    return cost


def test_the_entry_in_force_at_the_events_start_time_prices_it() -> None:
    assert cost_at(PRICE_CUT) == pytest.approx(2.0)  # exactly at the date: the new price
    assert cost_at(PRICE_CUT - timedelta(microseconds=1)) == pytest.approx(10.0)
    assert cost_at(NOW) == pytest.approx(2.0)


def test_an_event_before_a_models_first_entry_uses_the_first_entry() -> None:
    assert cost_at(datetime(2020, 1, 1, tzinfo=UTC)) == pytest.approx(10.0)


def test_the_effective_date_is_a_utc_day_whatever_the_events_zone() -> None:
    # 2025-06-10 01:30 in Paris is still 2025-06-09 in UTC: the old price.
    paris_summer = timezone(timedelta(hours=2))
    assert cost_at(datetime(2025, 6, 10, 1, 30, tzinfo=paris_summer)) == pytest.approx(10.0)
    assert cost_at(datetime(2025, 6, 10, 2, 0, tzinfo=paris_summer)) == pytest.approx(2.0)
    assert cost_at(datetime(2025, 6, 9, 23, 0, tzinfo=UTC)) == pytest.approx(10.0)


def test_cached_and_reasoning_tokens_are_billed_at_their_own_prices() -> None:
    cost, _ = TABLE.price(
        None,
        "acme",
        "reasoner",
        10_000,
        3_000,
        at=NOW,
        cached_input_tokens=8_000,
        reasoning_tokens=1_000,
    )
    # 2,000 fresh input at 2.0, 8,000 cached at 0.5, 2,000 plain output at 8.0,
    # 1,000 reasoning at 12.0, per million tokens.
    by_hand = (2_000 * 2.0 + 8_000 * 0.5 + 2_000 * 8.0 + 1_000 * 12.0) / 1_000_000
    assert cost == pytest.approx(by_hand) == pytest.approx(0.036)


def test_cached_and_reasoning_prices_default_to_the_plain_ones() -> None:
    before_cut = PRICE_CUT - timedelta(days=1)
    cost, _ = TABLE.price(
        None,
        "acme",
        "reasoner",
        1_000_000,
        1_000_000,
        at=before_cut,
        cached_input_tokens=400_000,
        reasoning_tokens=300_000,
    )
    assert cost == pytest.approx(10.0 + 40.0)


def test_builtin_table_prices_known_models_case_insensitively() -> None:
    table = builtin_prices()
    cost, source = table.price(None, "OpenAI", "GPT-4o", 1_000_000, 1_000_000, at=NOW)
    assert cost == pytest.approx(12.5)
    assert source is CostSource.PRICE_TABLE


def test_builtin_table_keeps_o3s_price_history() -> None:
    table = builtin_prices()
    launch = PRICE_CUT - timedelta(days=1)
    assert table.price(None, "openai", "o3", 1_000_000, 0, at=launch)[0] == pytest.approx(10.0)
    assert table.price(None, "openai", "o3", 1_000_000, 0, at=PRICE_CUT)[0] == pytest.approx(2.0)


def test_a_reported_cost_wins_and_unknown_models_are_flagged() -> None:
    table = builtin_prices()
    assert table.price(0.42, "openai", "gpt-4o", 10, 10, at=NOW) == (0.42, CostSource.REPORTED)
    assert table.price(None, "acme", "secret", 10, 10, at=NOW) == (0.0, CostSource.UNPRICED)
    assert table.price(None, None, None, 0, 0, at=NOW) == (0.0, CostSource.PRICE_TABLE)


def test_a_reported_cost_wins_over_cached_and_reasoning_pricing() -> None:
    reported = TABLE.price(
        0.01,
        "acme",
        "reasoner",
        10_000,
        3_000,
        at=NOW,
        cached_input_tokens=8_000,
        reasoning_tokens=1_000,
    )
    assert reported == (0.01, CostSource.REPORTED)


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(document))
    return path


def test_a_user_file_replaces_entries_of_the_same_date_and_adds_new_ones(tmp_path: Path) -> None:
    override = write(
        tmp_path,
        {
            "models": [
                # Same provider, model and date as a built-in entry (any case): replaces it.
                entry(provider="OpenAI", model="o3", input=1.0, output=1.0),
                # A later date for a built-in model: extends its history.
                entry(provider="openai", model="gpt-4o", effective_from="2026-01-01", input=0.5),
                # A model the built-in table does not know.
                entry(provider="acme", model="house-llm", input=4, output=8),
            ]
        },
    )
    table = load_prices(override)
    o3_before_cut = PRICE_CUT - timedelta(days=1)
    assert table.price(None, "openai", "o3", 1_000_000, 0, at=PRICE_CUT)[0] == pytest.approx(1.0)
    assert table.price(None, "openai", "o3", 1_000_000, 0, at=o3_before_cut)[0] == 10.0
    assert table.price(None, "openai", "gpt-4o", 1_000_000, 0, at=NOW)[0] == pytest.approx(0.5)
    december = datetime(2025, 12, 31, tzinfo=UTC)
    assert table.price(None, "openai", "gpt-4o", 1_000_000, 0, at=december)[0] == 2.5
    assert table.price(None, "acme", "house-llm", 0, 1_000_000, at=NOW)[0] == pytest.approx(8.0)
    assert table.price(None, "anthropic", "claude-haiku-4-5", 1_000_000, 0, at=NOW)[0] == 1.0
    assert len(table) == len(builtin_prices()) + 1


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (
            {"prices": []},
            'expected {"models": [{"provider": ..., "model": ..., "effective_from": '
            '"YYYY-MM-DD", "input": ..., "output": ...}, ...]}',
        ),
        ({"models": [42]}, "models[0]: an entry must be a JSON object"),
        (
            {"models": [entry(), entry(effective_from="2025-6-1")]},
            "models[1] (acme/reasoner from 2025-6-1): "
            "effective_from must be a YYYY-MM-DD date, got '2025-6-1'",
        ),
        (
            {"models": [entry(effective_from="2025-02-30")]},
            "models[0] (acme/reasoner from 2025-02-30): "
            "effective_from must be a YYYY-MM-DD date, got '2025-02-30'",
        ),
        (
            {"models": [entry(effective_from=20250610)]},
            "models[0] (acme/reasoner from 20250610): "
            "effective_from must be a YYYY-MM-DD date, got 20250610",
        ),
        (
            {"models": [entry(input=-1)]},
            "models[0] (acme/reasoner from 2025-06-10): "
            "input must be a non-negative finite number, got -1",
        ),
        (
            {"models": [entry(cached_input=float("nan"))]},
            "models[0] (acme/reasoner from 2025-06-10): "
            "cached_input must be a non-negative finite number, got nan",
        ),
        (
            {"models": [entry(reasoning="12")]},
            "models[0] (acme/reasoner from 2025-06-10): "
            "reasoning must be a number (USD per million tokens), got '12'",
        ),
        (
            {"models": [entry(output=True)]},
            "models[0] (acme/reasoner from 2025-06-10): "
            "output must be a number (USD per million tokens), got True",
        ),
        (
            {"models": [{"provider": "acme", "input": 1, "output": 1}]},
            "models[0] (acme): missing model, effective_from",
        ),
        (
            {"models": [entry(model="")]},
            "models[0] (acme/ from 2025-06-10): model must be a non-empty string, got ''",
        ),
        (
            {"models": [entry(cache_input=0.5)]},
            "models[0] (acme/reasoner from 2025-06-10): unknown key cache_input (known: "
            "provider, model, effective_from, input, output, cached_input, reasoning)",
        ),
        (
            {"models": [entry(), entry(model="Reasoner", input=3.0)]},
            "models[1] (acme/Reasoner from 2025-06-10) repeats models[0]",
        ),
    ],
)
def test_a_bad_user_file_gives_one_line_naming_the_entry(
    tmp_path: Path, document: object, reason: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(CoalmineError) as caught:
        load_prices(path)
    assert str(caught.value) == f"price table {path} is not valid: {reason}"


def test_a_missing_user_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CoalmineError, match="cannot read price table"):
        load_prices(tmp_path / "nope.json")
