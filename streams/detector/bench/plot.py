"""The benchmark's PNG: detection delay per scenario and judge, and A/A false-alarm rates.

Left: one line per regression scenario; per judge a dot at the median delay and a bar to
the p90 (log scale). A miss (never detected within the horizon) is drawn as an open
triangle at the right edge. Right: false-alarm rate per deployment in each A/A scenario with
its Wilson 95 % interval, against the 1 % rollback level (log scale; zero is drawn at the
left edge).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streams.detector.bench.report import TARGETS, fmt_duration
from streams.detector.bench.summary import Row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLORS = {
    "coalmine": "#d62728",
    "coalmine-drift": "#9467bd",
    "kayenta": "#1f77b4",
    "flagger": "#2ca02c",
    "flagger-abs": "#8c564b",
}
_DELAY_MIN_S, _HORIZON_S, _MISS_S = 4.0, 3600.0, 9000.0
_RATE_MIN = 5e-4


def _judges(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(row.detector for row in rows))


def _delay_panel(ax: Axes, rows: Sequence[Row]) -> None:
    reg = [r for r in rows if r.family in ("regression", "drift")]
    scenarios = list(dict.fromkeys(r.scenario for r in reg))
    judges = _judges(reg)
    step = 0.8 / max(1, len(judges))
    for j, judge in enumerate(judges):
        for row in (r for r in reg if r.detector == judge):
            y = scenarios.index(row.scenario) + (j - (len(judges) - 1) / 2) * step
            color = COLORS.get(judge, "black")
            median, p90 = row.delay_median_s, row.delay_p90_s
            right = p90 if math.isfinite(p90) else _MISS_S
            if math.isfinite(median):
                ax.plot([max(median, _DELAY_MIN_S), right], [y, y], color=color, lw=2, alpha=0.6)
                ax.plot(max(median, _DELAY_MIN_S), y, "o", color=color, ms=6)
            else:
                ax.plot(_MISS_S, y, "x", color=color, ms=7, mew=2)
            if row.onset_s > 0 and row.false_alarm_rate:
                at = right if math.isfinite(median) else _MISS_S
                ax.text(
                    at * 1.15,
                    y,
                    f"{100 * row.false_alarm_rate:.1f}% alarmed before onset",
                    fontsize=6.5,
                    color=color,
                    va="center",
                )
    for target in TARGETS:
        if target.what == "delay_median_s" and target.scenario in scenarios:
            y = scenarios.index(target.scenario) - 0.4
            ax.plot(target.limit, y, "v", color="black", ms=5)
    for seconds in (60, 300, 900, 3600):
        ax.axvline(seconds, color="grey", lw=0.6, ls=":")
    ax.axvspan(_HORIZON_S * 1.6, _MISS_S * 1.6, color="0.92")
    ax.text(_MISS_S, -0.45, "missed\n(inf)", fontsize=7, ha="center", va="bottom")
    ax.set_xscale("log")
    ax.set_xlim(_DELAY_MIN_S, _MISS_S * 1.6)
    ticks = [(5, "5 s"), (15, "15 s"), (30, "30 s"), (60, "1 min"), (120, "2 min")]
    ticks += [(300, "5 min"), (900, "15 min"), (1800, "30 min"), (3600, "1 h")]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_yticks(range(len(scenarios)), scenarios, fontsize=8)
    ax.set_ylim(-0.6, len(scenarios) - 0.1)
    ax.invert_yaxis()
    ax.grid(axis="y", color="0.9", lw=0.5)
    ax.set_xlabel("detection delay after onset (dot = median, bar to p90; x = median missed)")
    ax.set_title("Time to rollback (lower is better)", fontsize=10)
    for judge in judges:
        ax.plot([], [], "o-", color=COLORS.get(judge, "black"), label=judge)
    ax.plot([], [], "v", color="black", ms=5, label="target median (issue 3)")


def _false_alarm_panel(ax: Axes, rows: Sequence[Row]) -> None:
    aa = [r for r in rows if r.family == "aa" and r.false_alarm_rate is not None]
    scenarios = list(dict.fromkeys(r.scenario for r in aa))
    judges = _judges(aa)
    step = 0.8 / max(1, len(judges))
    for j, judge in enumerate(judges):
        for row in (r for r in aa if r.detector == judge):
            y = scenarios.index(row.scenario) + (j - (len(judges) - 1) / 2) * step
            rate = max(row.false_alarm_rate or 0.0, _RATE_MIN)
            low = max(row.false_alarm_wilson_low or 0.0, _RATE_MIN)
            high = max(row.false_alarm_wilson_high or 0.0, _RATE_MIN)
            color = COLORS.get(judge, "black")
            ax.plot([low, high], [y, y], color=color, lw=2, alpha=0.6)
            ax.plot(rate, y, "o", color=color, ms=6)
            ax.text(
                high * 1.15,
                y,
                f"{100 * (row.false_alarm_rate or 0):.1f}%",
                fontsize=6.5,
                va="center",
                color=color,
            )
    ax.axvline(0.01, color="black", lw=1, ls="--")
    ax.text(0.0105, -0.55, "alpha = 1%", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(_RATE_MIN * 0.8, 3.0)
    ax.set_yticks(range(len(scenarios)), scenarios, fontsize=8)
    ax.set_ylim(-0.6, len(scenarios) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("false rollbacks per deployment (95% Wilson interval; 0 drawn at left)")
    ax.set_title("A/A false-alarm rate (lower is better)", fontsize=10)


def _subtitle(rows: Sequence[Row]) -> str:
    parts = ["headline: 10% canary of 100 req/s, 5 s windows, every judge peeks every window"]
    for row in rows:
        if row.arl0_s is not None:
            parts.append(
                f"drift detector ARL0 {fmt_duration(row.arl0_s)} "
                f"(95% lower bound {fmt_duration(row.arl0_lower95_s)}, {row.runs} runs)"
            )
    return "; ".join(parts)


def write_plot(rows: Sequence[Row], path: Path) -> None:
    """Render the two panels to ``path`` (PNG)."""
    # matplotlib is an optional dependency (the "bench" extra): imported only when plotting.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(
        1, 2, figsize=(15, 9), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained"
    )
    _delay_panel(left, rows)
    _false_alarm_panel(right, rows)
    figure.legend(loc="outside lower center", ncols=6, fontsize=9, frameon=False)
    figure.suptitle(
        "Coalmine canary judges vs Kayenta- and Flagger-style judges\n" + _subtitle(rows),
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
