"""Who the worker's /sql page answers, its session's settings, and the query token file."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from streams.errors import ClickHouseUnavailableError, CoalmineError
from streams.failures import clickhouse_message
from streams.httpguard import host_allowed
from streams.runtime import sqlpage
from streams.runtime.sqlpage import MAX_BODY_BYTES, Refusal, query_of, refusal
from streams.settings import Settings
from streams.storage.sqlsession import LIMITS, session_settings

TOKEN = "s3cret-token"
GOOD = {
    "Host": "127.0.0.1:6066",
    "Authorization": f"Bearer {TOKEN}",
    "Content-Type": "application/json",
    "Content-Length": "42",
}


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:6066", True),
        ("localhost:6066", True),
        ("[::1]:6066", True),
        ("127.0.0.1:6067", False),
        ("127.0.0.1", False),
        ("attacker.example:6066", False),
        ("127.0.0.1.nip.io:6066", False),
        ("", False),
        ("[::1:6066", False),
        ("127.0.0.1:99999999", False),
    ],
)
def test_the_host_must_name_this_worker_not_a_rebound_name(host: str, allowed: bool) -> None:
    assert host_allowed(host, "127.0.0.1", 6066) is allowed


def test_a_worker_bound_to_a_name_accepts_that_name() -> None:
    assert host_allowed("worker.internal:6066", "worker.internal", 6066)
    assert not host_allowed("other.internal:6066", "worker.internal", 6066)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Host": "evil.example:6066"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": TOKEN}, 401),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Length": str(MAX_BODY_BYTES + 1)}, 413),
        ({"Content-Length": "-1"}, 411),
    ],
)
def test_requests_not_from_coalmine_sql_are_refused(change: dict[str, str], status: int) -> None:
    refused = refusal({**GOOD, **change}, TOKEN, "127.0.0.1", 6066)
    assert refused is not None and refused.status == status


def test_coalmine_sql_request_passes_also_with_its_own_origin() -> None:
    assert refusal(GOOD, TOKEN, "127.0.0.1", 6066) is None
    same_origin = {**GOOD, "Origin": "http://127.0.0.1:6066"}
    assert refusal(same_origin, TOKEN, "127.0.0.1", 6066) is None
    without_length = {k: v for k, v in GOOD.items() if k != "Content-Length"}
    assert refusal(without_length, TOKEN, "127.0.0.1", 6066) == Refusal(
        411, "Content-Length is required"
    )


def test_the_host_is_checked_before_the_token() -> None:
    refused = refusal({"Host": "evil.example:6066"}, TOKEN, "127.0.0.1", 6066)
    assert refused is not None and refused.status == 403


def test_the_body_holds_one_query() -> None:
    assert query_of(b'{"query": "SELECT 1"}') == "SELECT 1"
    for body in (b"SELECT 1", b"\xff", b"[1]", b'{"query": 1}', b"{}"):
        with pytest.raises(ValueError, match="body"):
            query_of(body)


def test_the_body_limit_fits_the_longest_query_fully_escaped() -> None:
    longest = json.dumps({"query": "\U0001f600" * LIMITS.max_query_chars}).encode()
    assert len(longest) <= MAX_BODY_BYTES


def test_the_session_is_made_read_only_after_its_limits() -> None:
    settings = session_settings(LIMITS, server_readonly=0)
    assert list(settings)[-1] == "readonly" and settings["readonly"] == 1
    assert settings["max_execution_time"] == LIMITS.max_execution_s
    assert settings["max_memory_usage"] == LIMITS.max_memory_bytes
    assert settings["max_result_rows"] == LIMITS.max_result_rows
    assert settings["max_result_bytes"] == LIMITS.max_result_bytes


def test_a_read_only_server_user_keeps_its_readonly() -> None:
    assert "readonly" not in session_settings(LIMITS, server_readonly=2)
    with pytest.raises(ClickHouseUnavailableError, match="readonly = 2"):
        session_settings(LIMITS, server_readonly=1)


def test_clickhouse_errors_become_one_short_line() -> None:
    message = (
        "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): failed at "
        "position 9: ; DROP. : In scope SELECT formatQuerySingleLine('SELECT 1; DROP'). "
        "(SYNTAX_ERROR) (version 26.9.2.1)\nStack trace: ..."
    )
    assert clickhouse_message(message) == (
        "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): failed at "
        "position 9: ; DROP. "
    )
    assert len(clickhouse_message("x" * 10_000)) == 500


def test_the_token_file_is_readable_by_its_user_only(tmp_path: Path) -> None:
    settings = replace(Settings.from_env(), clickhouse_url=f"chdb://{tmp_path / 'chdb'}")
    (tmp_path / "chdb.sql-token").write_text("old")
    (tmp_path / "chdb.sql-token").chmod(0o644)
    token = sqlpage.issue_token(settings)
    path = sqlpage.token_file(settings)
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sqlpage.read_token(settings) == token and len(token) >= 40
    assert sqlpage.issue_token(settings) != token


def test_a_missing_token_says_what_to_do(tmp_path: Path) -> None:
    settings = replace(Settings.from_env(), clickhouse_url=f"chdb://{tmp_path / 'chdb'}")
    with pytest.raises(CoalmineError, match="as the user who runs the worker"):
        sqlpage.read_token(settings)
