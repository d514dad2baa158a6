"""Every numeric argument of every subcommand refuses NaN, infinities and out-of-range values
in one line; SIGTERM stops a command the way Ctrl-C does."""

from __future__ import annotations

import argparse
import os
import signal
import time

import pytest

from streams import cli
from streams.devtools.generate import TrafficPlan

BAD_ARGUMENTS = [
    (["demo", "--rate", "nan"], "argument --rate: 'nan' is not a finite number"),
    (["demo", "--rate", "inf"], "argument --rate: 'inf' is not a finite number"),
    (["demo", "--rate", "0"], "argument --rate: '0' must be between 0.001 and 1,000,000"),
    (["demo", "--rate", "-3"], "argument --rate: '-3' must be between"),
    (["demo", "--rate", "fast"], "argument --rate: 'fast' is not a number"),
    (["demo", "--duration", "NaN"], "argument --duration: 'NaN' is not a finite number"),
    (["demo", "--duration", "0"], "argument --duration: '0' must be positive"),
    (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["bench", "ingest", "--events", "-5"], "'-5' must be between 1 and 10,000,000"),
    (["bench", "ingest", "--events", "0"], "'0' must be between 1 and 10,000,000"),
    (["bench", "ingest", "--events", "1e3"], "'1e3' is not a whole number"),
    (["bench", "ingest", "--spans-per-message", "1,0"], "'0' must be between 1 and 1,000"),
    (["bench", "ingest", "--spans-per-message", "5,x"], "'x' is not a whole number"),
    (["bench", "ingest", "--events", "100000001"], "must be between 1 and 10,000,000"),
    (["generate", "--rate", "nan"], "argument --rate: 'nan' is not a finite number"),
    (["generate", "--rate", "2e6"], "argument --rate: '2e6' must be between"),
    (["generate", "--duration", "-1"], "argument --duration: '-1' must be positive"),
    (["generate", "--requests", "0"], "argument --requests: '0' must be between 1"),
    (["generate", "--agents", "0"], "argument --agents: '0' must be between 1"),
    (["generate", "--agents", "99"], "argument --agents: '99' must be between 1"),
    (["generate", "--canary-share", "nan"], "argument --canary-share: 'nan' is not a finite"),
    (["generate", "--canary-share", "1.5"], "argument --canary-share: '1.5' must be between"),
    (["generate", "--error-rate", "-0.1"], "argument --error-rate: '-0.1' must be between"),
    (["generate", "--canary-error-rate", "inf"], "'inf' is not a finite number"),
    (["generate", "--canary-latency-factor", "inf"], "'inf' is not a finite number"),
    (["generate", "--canary-latency-factor", "0"], "'0' must be positive and at most 100"),
    (["generate", "--canary-quality-delta", "-2"], "'-2' must be between -1 and 1"),
    (["generate", "--canary-llm-calls-factor", "11"], "'11' must be positive and at most 10"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS)
def test_bad_numbers_are_refused_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
    assert error.startswith("coalmine ")


@pytest.mark.parametrize(
    ("argv", "attribute", "value"),
    [
        (["demo", "--rate", "0.5", "--duration", "10"], "rate", 0.5),
        (["demo", "--seed", "-4"], "seed", -4),
        (["bench", "ingest", "--events", "1"], "events", 1),
        (["generate", "--canary-share", "1"], "canary_share", 1.0),
        (["generate", "--canary-quality-delta", "-1"], "canary_quality_delta", -1.0),
        (["generate", "--canary-llm-calls-factor", "2"], "canary_llm_calls_factor", 2.0),
    ],
)
def test_values_in_range_are_accepted(argv: list[str], attribute: str, value: object) -> None:
    assert getattr(cli.build_parser().parse_args(argv), attribute) == value


@pytest.mark.parametrize(
    "plan",
    [
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"duration_s": float("nan")},
        {"canary_share": float("nan")},
        {"canary_latency_factor": float("inf")},
        {"canary_quality_delta": float("nan")},
        {"canary_llm_calls_factor": float("nan")},
    ],
)
def test_traffic_plans_refuse_nan_and_infinity(plan: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TrafficPlan(**plan)  # type: ignore[arg-type]


def test_sigterm_raises_terminated_inside_the_block_only() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_terminated_command_unwinds_and_exits_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unwound: list[str] = []

    def command(args: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            unwound.append("cleanup ran")
        return 0

    monkeypatch.setattr(cli, "_run", command)
    assert cli.main(["migrate"]) == 143
    assert unwound == ["cleanup ran"]
    assert capsys.readouterr().err == "coalmine: terminated\n"
