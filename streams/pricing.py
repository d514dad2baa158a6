"""The model price table: what a token costs, per provider and model.

The built-in table is a data file (``streams/data/prices.json``); a user's file given by
``COALMINE_PRICES_FILE`` in the same format is laid over it, entry by entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Any

from streams.errors import CoalmineError

TOKENS_PER_UNIT = 1_000_000


class CostSource(StrEnum):
    REPORTED = "reported"
    """The event carried ``cost_usd``."""
    PRICE_TABLE = "price_table"
    """Computed here from tokens and the price table."""
    UNPRICED = "unpriced"
    """No cost given and the model is not in the table: stored as 0 and counted."""


@dataclass(frozen=True)
class ModelPrice:
    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / TOKENS_PER_UNIT


class PriceTable:
    """Prices keyed by ``(provider, model)``; lookups are case-insensitive."""

    def __init__(self, prices: dict[tuple[str, str], ModelPrice]) -> None:
        self._prices = {(p.lower(), m.lower()): price for (p, m), price in prices.items()}

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, provider: str | None, model: str | None) -> ModelPrice | None:
        if provider is None or model is None:
            return None
        return self._prices.get((provider.lower(), model.lower()))

    def price(
        self,
        cost_usd: float | None,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
    ) -> tuple[float, CostSource]:
        """The cost to store and where it came from; a reported cost always wins."""
        if cost_usd is not None:
            return cost_usd, CostSource.REPORTED
        if input_tokens == 0 and output_tokens == 0:
            return 0.0, CostSource.PRICE_TABLE
        found = self.lookup(provider, model)
        if found is None:
            return 0.0, CostSource.UNPRICED
        return found.cost(input_tokens, output_tokens), CostSource.PRICE_TABLE

    def overlaid(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s entries added or replacing ours."""
        return PriceTable({**self._prices, **other._prices})

    @classmethod
    def parse(cls, document: Any, source: str) -> PriceTable:
        """Build a table from the JSON document format of ``prices.json``."""
        try:
            entries = document["models"]
            return cls(
                {
                    (str(e["provider"]), str(e["model"])): ModelPrice(
                        _price(e["input"]), _price(e["output"])
                    )
                    for e in entries
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CoalmineError(
                f"price table {source} is not valid: {exc!r} (expected "
                '{"models": [{"provider": ..., "model": ..., "input": ..., "output": ...}]})'
            ) from None


def _price(value: Any) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"price {value!r} must be a non-negative number")
    return number


def builtin_prices() -> PriceTable:
    text = (files("streams") / "data" / "prices.json").read_text(encoding="utf-8")
    return PriceTable.parse(json.loads(text), "built-in prices.json")


def load_prices(override: Path | None) -> PriceTable:
    """The built-in table, with the user's file laid over it when given."""
    table = builtin_prices()
    if override is None:
        return table
    try:
        document = json.loads(override.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CoalmineError(f"cannot read price table {override}: {exc}") from None
    return table.overlaid(PriceTable.parse(document, str(override)))
