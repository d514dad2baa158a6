"""The model price table: what a token costs, per provider and model, and since when.

The built-in table is a data file (``streams/data/prices.json``); a user's file given by
``COALMINE_PRICES_FILE`` in the same format is laid over it, entry by entry. Each entry is
the price of one model from its ``effective_from`` date (00:00 UTC) on, so the entries of a
model form its price history and a provider's price change never reprices past events:

* an event is priced with the entry in force at its ``start_time``, the one with the greatest
  ``effective_from`` not after it;
* an event older than a model's first entry is priced with that first entry, because a
  table usually starts after the traffic it prices (a model added to it later) and the
  earliest known price is a better guess than none.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
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
    """USD per million tokens of each kind."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cached_input_usd_per_mtok: float
    reasoning_usd_per_mtok: float

    def cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int, reasoning_tokens: int
    ) -> float:
        """Cached tokens are part of ``input_tokens`` and reasoning tokens part of
        ``output_tokens`` (as :class:`~schemas.trace.TraceEvent` validates); each part is
        billed at its own price and the rest at the plain one."""
        return (
            (input_tokens - cached_input_tokens) * self.input_usd_per_mtok
            + cached_input_tokens * self.cached_input_usd_per_mtok
            + (output_tokens - reasoning_tokens) * self.output_usd_per_mtok
            + reasoning_tokens * self.reasoning_usd_per_mtok
        ) / TOKENS_PER_UNIT


@dataclass(frozen=True)
class PriceEntry:
    """One row of a price file: a model's price from ``effective_from`` on."""

    provider: str
    model: str
    effective_from: date
    price: ModelPrice

    @property
    def key(self) -> tuple[str, str, date]:
        """What an overlay entry replaces by; names compare case-insensitively."""
        return (self.provider.lower(), self.model.lower(), self.effective_from)


class _PriceHistory:
    """One model's entries, oldest first, found by bisecting their start times."""

    def __init__(self, entries: Iterable[PriceEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.effective_from)
        self._starts = [_utc_midnight(e.effective_from) for e in ordered]
        self._prices = [e.price for e in ordered]

    def at(self, when: datetime) -> ModelPrice:
        in_force = bisect_right(self._starts, when.timestamp()) - 1
        return self._prices[max(in_force, 0)]  # before the first entry: the first one


def _utc_midnight(day: date) -> float:
    return datetime.combine(day, time(), UTC).timestamp()


class PriceTable:
    """Price histories keyed by ``(provider, model)``; lookups are case-insensitive.

    Of several entries with the same key (provider, model, effective_from), the last wins.
    """

    def __init__(self, entries: Iterable[PriceEntry]) -> None:
        self._entries = {entry.key: entry for entry in entries}
        by_model: dict[tuple[str, str], list[PriceEntry]] = {}
        for (provider, model, _), entry in self._entries.items():
            by_model.setdefault((provider, model), []).append(entry)
        self._histories = {key: _PriceHistory(group) for key, group in by_model.items()}

    def __len__(self) -> int:
        """The number of models priced."""
        return len(self._histories)

    def lookup(self, provider: str | None, model: str | None, at: datetime) -> ModelPrice | None:
        """The model's price in force at ``at`` (timezone-aware), or ``None`` if unknown."""
        if provider is None or model is None:
            return None
        history = self._histories.get((provider.lower(), model.lower()))
        return None if history is None else history.at(at)

    def price(
        self,
        cost_usd: float | None,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        *,
        at: datetime,
        cached_input_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> tuple[float, CostSource]:
        """The cost to store for an event starting at ``at`` and where it came from; a
        reported cost always wins."""
        if cost_usd is not None:
            return cost_usd, CostSource.REPORTED
        if input_tokens == 0 and output_tokens == 0:
            return 0.0, CostSource.PRICE_TABLE
        found = self.lookup(provider, model, at)
        if found is None:
            return 0.0, CostSource.UNPRICED
        cost = found.cost(input_tokens, output_tokens, cached_input_tokens, reasoning_tokens)
        return cost, CostSource.PRICE_TABLE

    def overlaid(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s entries added, replacing ours of the same provider,
        model and effective date."""
        return PriceTable([*self._entries.values(), *other._entries.values()])

    @classmethod
    def parse(cls, document: Any, source: str) -> PriceTable:
        """Build a table from the JSON document format of ``prices.json``; an invalid one
        raises :class:`CoalmineError` naming the first bad entry."""
        try:
            return cls(_parse_entries(document))
        except _InvalidPricesError as exc:
            raise CoalmineError(f"price table {source} is not valid: {exc}") from None


class _InvalidPricesError(ValueError):
    """Why a price document is invalid; :meth:`PriceTable.parse` adds where it came from."""


REQUIRED_KEYS = ("provider", "model", "effective_from", "input", "output")
OPTIONAL_KEYS = ("cached_input", "reasoning")
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _parse_entries(document: Any) -> list[PriceEntry]:
    if not isinstance(document, Mapping) or not isinstance(document.get("models"), list):
        raise _InvalidPricesError(
            'expected {"models": [{"provider": ..., "model": ..., "effective_from": '
            '"YYYY-MM-DD", "input": ..., "output": ...}, ...]}'
        )
    entries: list[PriceEntry] = []
    first_at: dict[tuple[str, str, date], int] = {}
    for index, raw in enumerate(document["models"]):
        where = _describe(index, raw)
        try:
            entry = _parse_entry(raw)
        except _InvalidPricesError as exc:
            raise _InvalidPricesError(f"{where}: {exc}") from None
        earlier = first_at.setdefault(entry.key, index)
        if earlier != index:
            raise _InvalidPricesError(f"{where} repeats models[{earlier}]")
        entries.append(entry)
    return entries


def _describe(index: int, raw: Any) -> str:
    """``models[3] (openai/o3 from 2025-06-10)``, with as much of the name as is there."""
    if not isinstance(raw, Mapping):
        return f"models[{index}]"
    name = "/".join(str(raw[key]) for key in ("provider", "model") if key in raw)
    if "effective_from" in raw:
        name += f" from {raw['effective_from']}"
    return f"models[{index}] ({name})" if name else f"models[{index}]"


def _parse_entry(raw: Any) -> PriceEntry:
    if not isinstance(raw, Mapping):
        raise _InvalidPricesError("an entry must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise _InvalidPricesError(f"missing {', '.join(missing)}")
    # A misspelt optional key would silently price at the default, so unknown keys are errors.
    unknown = sorted(set(raw) - {*REQUIRED_KEYS, *OPTIONAL_KEYS})
    if unknown:
        raise _InvalidPricesError(
            f"unknown key {', '.join(unknown)} (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})"
        )
    input_price = _usd_per_mtok(raw, "input")
    output_price = _usd_per_mtok(raw, "output")
    return PriceEntry(
        provider=_name(raw, "provider"),
        model=_name(raw, "model"),
        effective_from=_day(raw["effective_from"]),
        price=ModelPrice(
            input_usd_per_mtok=input_price,
            output_usd_per_mtok=output_price,
            cached_input_usd_per_mtok=(
                _usd_per_mtok(raw, "cached_input") if "cached_input" in raw else input_price
            ),
            reasoning_usd_per_mtok=(
                _usd_per_mtok(raw, "reasoning") if "reasoning" in raw else output_price
            ),
        ),
    )


def _name(raw: Mapping[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise _InvalidPricesError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _day(value: Any) -> date:
    if isinstance(value, str) and _ISO_DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _InvalidPricesError(f"effective_from must be a YYYY-MM-DD date, got {value!r}")


def _usd_per_mtok(raw: Mapping[str, Any], key: str) -> float:
    value = raw[key]
    # bool is an int to Python, and JSON true as a price is a mistake, not 1 USD.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _InvalidPricesError(f"{key} must be a number (USD per million tokens), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise _InvalidPricesError(f"{key} must be a non-negative finite number, got {value!r}")
    return float(value)


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
