from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from streams.sqlcli import render


def test_table_aligns_numbers_right_and_counts_rows() -> None:
    text = render(["agent", "requests"], [("support-bot", 12), ("sql", 3400)], "table")
    assert text.splitlines() == [
        "agent        requests",
        "-----------  --------",
        "support-bot        12",
        "sql              3400",
        "(2 rows)",
    ]


def test_csv_and_json_keep_every_value() -> None:
    rows: list[Sequence[Any]] = [("a,b", None, 0.5)]
    assert render(["x", "y", "z"], rows, "csv") == 'x,y,z\n"a,b",NULL,0.5'
    assert json.loads(render(["x", "y", "z"], rows, "json")) == [{"x": "a,b", "y": None, "z": 0.5}]


def test_empty_result_still_shows_the_header() -> None:
    assert render(["n"], [], "table").splitlines() == ["n", "-", "(0 rows)"]


def test_control_characters_print_as_escapes_in_the_table() -> None:
    text = render(["note\x1b[2J"], [["red\x1b[31m\nnext\u202eline"]], "table")
    assert "\x1b" not in text and "\u202e" not in text
    assert "note\\x1b[2J" in text
    assert "red\\x1b[31m\\nnext\\u202eline" in text
