from __future__ import annotations

from dataclasses import replace

import pytest

from streams.runtime.statuspage import cookie_name, presented_token, refusal
from streams.settings import Settings
from streams.statuspage.address import page_url

TOKEN = "s3cret-token"
SETTINGS = replace(Settings.from_env(), worker_host="127.0.0.1", worker_port=6066)
GOOD = {"Host": "127.0.0.1:6066"}


def refused(
    headers: dict[str, str], method: str = "GET", query: str = "", presented: str = TOKEN
) -> int | None:
    why = refusal(method, headers, query, presented=presented, token=TOKEN, settings=SETTINGS)
    return None if why is None else why.status


def test_a_good_request_passes() -> None:
    assert refused(GOOD) is None
    assert refused({**GOOD, "Origin": "http://127.0.0.1:6066"}) is None
    assert refused({"Host": "localhost:6066"}, method="HEAD", query="agent=a") is None


@pytest.mark.parametrize(
    ("headers", "method", "query", "presented", "status"),
    [
        ({"Host": "rebound.example:6066"}, "GET", "", TOKEN, 403),
        ({"Host": "127.0.0.1:6067"}, "GET", "", TOKEN, 403),
        ({}, "GET", "", TOKEN, 403),
        ({**GOOD, "Origin": "http://evil.example"}, "GET", "", TOKEN, 403),
        ({**GOOD, "Origin": "null"}, "GET", "", TOKEN, 403),
        (GOOD, "POST", "", TOKEN, 405),
        (GOOD, "DELETE", "", TOKEN, 405),
        ({**GOOD, "Content-Length": "1"}, "GET", "", TOKEN, 413),
        ({**GOOD, "Transfer-Encoding": "chunked"}, "GET", "", TOKEN, 413),
        (GOOD, "GET", "agent=" + "x" * 1100, TOKEN, 414),
        (GOOD, "GET", "", "", 401),
        (GOOD, "GET", "", TOKEN + "x", 401),
        (GOOD, "GET", "", "s3cret-tokeN", 401),
    ],
)
def test_refusals_come_before_any_work(
    headers: dict[str, str], method: str, query: str, presented: str, status: int
) -> None:
    assert refused(headers, method, query, presented) == status


def test_the_token_comes_from_this_workers_cookie_or_a_bearer_header() -> None:
    mine = cookie_name(6066)
    assert presented_token({}, {mine: "from-cookie"}, mine) == "from-cookie"
    assert presented_token({}, {cookie_name(6067): "another-worker's"}, mine) == ""
    assert presented_token({"Authorization": "Bearer abc"}, {}, mine) == "abc"
    assert presented_token({"Authorization": "bearer abc"}, {}, mine) == "abc"
    assert presented_token({"Authorization": "Basic abc"}, {}, mine) == ""
    assert presented_token({}, {"other": "x"}, mine) == ""


def test_the_address_names_loopback_and_carries_the_token() -> None:
    assert page_url(SETTINGS, "a+b/c") == "http://127.0.0.1:6066/?token=a%2Bb/c"
    everywhere = replace(SETTINGS, worker_host="0.0.0.0")
    assert page_url(everywhere, "t") == "http://127.0.0.1:6066/?token=t"
    assert page_url(replace(SETTINGS, worker_host="localhost"), "t").startswith("http://localhost")
