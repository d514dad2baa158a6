from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.errors import CoalmineError
from streams.pricing import CostSource, builtin_prices, load_prices


def test_builtin_table_prices_known_models_case_insensitively() -> None:
    table = builtin_prices()
    cost, source = table.price(None, "OpenAI", "GPT-4o", 1_000_000, 1_000_000)
    assert cost == pytest.approx(12.5)
    assert source is CostSource.PRICE_TABLE


def test_a_reported_cost_wins_and_unknown_models_are_flagged() -> None:
    table = builtin_prices()
    assert table.price(0.42, "openai", "gpt-4o", 10, 10) == (0.42, CostSource.REPORTED)
    assert table.price(None, "acme", "secret", 10, 10) == (0.0, CostSource.UNPRICED)
    assert table.price(None, None, None, 0, 0) == (0.0, CostSource.PRICE_TABLE)


def test_a_user_file_overrides_and_extends_the_builtin_table(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps(
            {
                "models": [
                    {"provider": "openai", "model": "gpt-4o", "input": 1, "output": 1},
                    {"provider": "acme", "model": "house-llm", "input": 4, "output": 8},
                ]
            }
        )
    )
    table = load_prices(override)
    assert table.price(None, "openai", "gpt-4o", 1_000_000, 0)[0] == pytest.approx(1.0)
    assert table.price(None, "acme", "house-llm", 0, 1_000_000)[0] == pytest.approx(8.0)
    assert table.price(None, "anthropic", "claude-haiku-4-5", 1_000_000, 0)[0] == 1.0


@pytest.mark.parametrize(
    "document",
    [
        {"models": [{"provider": "x", "model": "y", "input": -1, "output": 1}]},
        {"models": [{"provider": "x", "model": "y", "input": "NaN", "output": 1}]},
        {"models": [{"provider": "x", "input": 1, "output": 1}]},
        {"prices": []},
    ],
)
def test_a_bad_user_file_gives_one_clear_error(tmp_path: Path, document: object) -> None:
    override = tmp_path / "prices.json"
    override.write_text(json.dumps(document))
    with pytest.raises(CoalmineError, match="is not valid"):
        load_prices(override)


def test_a_missing_user_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CoalmineError, match="cannot read price table"):
        load_prices(tmp_path / "nope.json")
