"""``coalmine versions`` refuses a bad file in one line before it talks to any broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import cli


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (b"agent: a\nversion: v1\n", "bot.yaml", "bot.yaml: model: required"),
        (b"{", "bot.json", "bot.json: not valid JSON: Expecting property name"),
        (b"agent: a\n", "bot.toml", "a version file's name ends in .yaml, .yml or .json"),
    ],
)
def test_a_bad_version_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, name: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert cli.main(["versions", "register", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("coalmine: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_a_missing_file_or_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, reason in ((tmp_path / "none.yaml", "No such file"), (tmp_path, "Is a directory")):
        assert cli.main(["versions", "register", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"coalmine: error: cannot read {path}: {reason}")
        assert err.count("\n") == 1


def test_an_endless_file_is_read_no_further_than_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["versions", "register", "/dev/zero"]) == 2
    assert "/dev/zero: the file is over 1,048,576 bytes" in capsys.readouterr().err


def test_every_action_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("register", "list", "show", "diff"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["versions", action, "--help"])
        assert exit_.value.code == 0
        assert f"coalmine versions {action}" in capsys.readouterr().out
