"""``coalmine alerts``' arguments: bad ones are one line, and the line names the option."""

from __future__ import annotations

import pytest

from streams.cli import build_parser


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--since", "yesterday"], "argument --since: 'yesterday' is neither a duration"),
        (["--since", "9999999999w"], "argument --since: '9999999999w' is further back"),
        (["--colour"], "unrecognized arguments: --colour"),
        (["--agent"], "argument --agent: expected one argument"),
    ],
)
def test_bad_arguments_are_one_line(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["alerts", *args])
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("coalmine") and error in last


def test_the_arguments_become_a_selection() -> None:
    args = build_parser().parse_args(["alerts", "-f", "--agent", "a", "--since", "2h", "--json"])
    assert (args.follow, args.agent, args.json) == (True, "a", True)
    assert args.since.tzinfo is not None
