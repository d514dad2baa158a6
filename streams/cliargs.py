"""Numeric command-line arguments that refuse NaN, infinities and out-of-range values.

argparse turns the :class:`argparse.ArgumentTypeError` these raise into one line naming the
option (``coalmine demo: error: argument --rate: 'nan' is not a finite number``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from streams.settings import Range


def float_in(allowed: Range) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number within ``allowed``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        _check(allowed, value, text)
        return value

    return parse


def int_in(allowed: Range) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number within ``allowed``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        _check(allowed, value, text)
        return value

    return parse


def ints_in(allowed: Range) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type`` for comma-separated whole numbers, each within ``allowed``."""
    one = int_in(allowed)

    def parse(text: str) -> tuple[int, ...]:
        return tuple(one(part.strip()) for part in text.split(","))

    return parse


def floats_in(allowed: Range) -> Callable[[str], tuple[float, ...]]:
    """An argparse ``type`` for comma-separated finite numbers, each within ``allowed``."""
    one = float_in(allowed)

    def parse(text: str) -> tuple[float, ...]:
        return tuple(one(part.strip()) for part in text.split(","))

    return parse


def _check(allowed: Range, value: float, text: str) -> None:
    if value not in allowed:
        raise argparse.ArgumentTypeError(f"{text!r} must be {allowed.describe()}")


RATE = Range(0.001, 1_000_000)
"""Requests per second of simulated traffic: one every ~17 minutes up to a million."""
DURATION_S = Range(0, 1_000_000_000, low_open=True)
