"""DriftDetector: one version against its own trailing history (silent regressions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.window_stats import WindowStats
from streams.detector.types import Decision

WINDOWS_PER_DAY_5S = 17_280


@dataclass(frozen=True)
class DriftConfig:
    """Drift detector settings."""

    arl0_windows: float = 2 * WINDOWS_PER_DAY_5S
    """Alarm threshold of the e-detector; the average run length to a false alarm under a
    stationary version is at least this many windows (Shin, Ramdas & Rinaldo 2023)."""
    reference_half_life_windows: float = 720.0
    """Half-life of the exponentially weighted trailing history (720 x 5 s = 1 h)."""
    reference_lag_windows: int = 60
    """The newest windows are kept out of the reference for this long (5 min at 5 s)."""
    min_reference_requests: int = 5_000
    """No alarm before the reference holds this many requests."""


class DriftDetector:
    """Change detector for one (agent, version) against its trailing history."""

    def __init__(self, config: DriftConfig = DriftConfig()) -> None:
        self.config = config

    def observe(self, stats: WindowStats, now: datetime) -> Decision:
        """Fold in one window (partials of the same window may come separately) and decide."""
        raise NotImplementedError
