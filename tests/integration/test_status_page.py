"""The status page on a real worker with a real rollout: a canary whose error rate rises is
rolled back by the loop (worker with the detector, controller, SDK router), then the page's
JSON endpoints are read and compared with the tables they come from, and the page is attacked.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from schemas.deployment import DeploymentState, Phase
from schemas.plan import RolloutStep
from streams.runtime.statuspage import MAX_QUERY_STRING_CHARS, cookie_name
from streams.statuspage.address import read_token
from streams.statuspage.queries import SERIES_FIGURES, iso
from tests.integration.controller_harness import wait_until
from tests.integration.harness import SpanStream, wait_for
from tests.integration.loop_harness import AGENT, CANARY, HELD, STABLE, Loop, plan, running_loop

pytestmark = pytest.mark.integration

FAUST_BUILTIN_PAGES = (
    "/router/",
    "/router/topics",
    "/router/traces/key/",
    "/table/",
    "/table/traces/",
    "/graph/",
    "/assignment/",
    "/performance/",
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RolledBack:
    loop: Loop
    deployed: DeploymentState
    token: str

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        """``path`` with the worker's own Host and the bearer token unless ``headers`` say
        otherwise (a header given as '' is left out)."""
        settings = self.loop.settings
        sent = {
            "Host": f"127.0.0.1:{settings.worker_port}",
            "Authorization": f"Bearer {self.token}",
            **(headers or {}),
        }
        return request(self.loop, "GET", path, {k: v for k, v in sent.items() if v})

    def api(self, endpoint: str, **parameters: str | int) -> Any:
        answer = self.get(f"/api/{endpoint}?{urllib.parse.urlencode(parameters)}")
        assert answer.status == 200, answer.body
        return answer.json()

    def sql(self, query: str) -> list[list[Any]]:
        return [list(row) for row in self.loop.worker.sql(query)]


def request(
    loop: Loop, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> Answer:
    settings = loop.settings
    connection = http.client.HTTPConnection(settings.worker_host, settings.worker_port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        reply = connection.getresponse()
        return Answer(reply.status, dict(reply.getheaders()), reply.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def rolled_back(
    kafka_settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RolledBack]:
    """A canary rolled back by the loop, its traffic stopped and its windows stored."""
    with running_loop(kafka_settings, tmp_path_factory.mktemp("status-page")) as loop:
        deployed = loop.deploy(plan(RolloutStep(weight=0.5, min_duration_s=HELD)))
        with loop.traffic(canary_error_rate=0.06):
            loop.wait_for(Phase.ROLLED_BACK)
        settings = loop.settings
        time.sleep(settings.window_seconds + settings.allowed_lateness_s + 3)
        yield RolledBack(loop, deployed, read_token(settings))


def test_the_endpoints_show_what_the_tables_hold(rolled_back: RolledBack) -> None:
    page, rollout_id = rolled_back, rolled_back.deployed.rollout_id
    assert rollout_id is not None

    (agent,) = [a for a in page.api("agents")["agents"] if a["agent"] == AGENT]
    assert (agent["phase"], agent["stable_version"], agent["canary_version"]) == (
        "rolled_back", STABLE, CANARY,
    )  # fmt: skip
    assert (agent["rollout_id"], agent["verdict"], agent["canary_weight"]) == (
        rollout_id, "rollback", 0,
    )  # fmt: skip

    assert wait_until(lambda: _series_agrees_with_version_summary(page), 30), _series_and_summary(
        page
    )

    evidence = page.api("evidence", agent=AGENT)
    assert (evidence["rollout_id"], evidence["canary_version"]) == (rollout_id, CANARY)
    in_rollout = (
        f"FROM coalmine.judgements FINAL WHERE agent = '{AGENT}' AND rollout_id = '{rollout_id}'"
    )
    judgements = page.sql(f"SELECT time, verdict {in_rollout} ORDER BY time, kafka_offset")
    assert [(v["time"], v["verdict"]) for v in evidence["verdicts"]] == [
        (iso(time_), verdict) for time_, verdict in judgements
    ]
    assert judgements[-1][1] == "rollback"
    last = page.sql(
        "SELECT m.metric, m.effect, m.cs_lower, m.cs_upper, m.e_value, m.threshold, m.tolerance "
        f"FROM (SELECT metrics {in_rollout} ORDER BY time DESC, kafka_offset DESC LIMIT 1) "
        "ARRAY JOIN metrics AS m"
    )
    shown = {
        m["metric"]: [m[k][-1] for k in ("effect", "cs_lower", "cs_upper", "e_value", "threshold")]
        + [abs(m["pass_bound"][-1])]
        for m in evidence["metrics"]
    }
    assert shown == {metric: values for metric, *values in last}
    assert all(len(m["t"]) == len(judgements) for m in evidence["metrics"])
    error_rate = next(m for m in evidence["metrics"] if m["metric"] == "error_rate")
    assert error_rate["verdict"][-1] == "rollback"
    assert error_rate["e_value"][-1] >= error_rate["threshold"][-1]

    timeline = page.api("timeline", agent=AGENT, rollout_id=rollout_id)["rows"]
    rows = page.sql(
        "SELECT time, source, event, version, canary_weight, detail, ref FROM "
        f"coalmine.deployment_timeline(agent = '{AGENT}', rollout_id = '{rollout_id}')"
    )
    assert [list(r.values()) for r in timeline] == [[iso(r[0]), *r[1:]] for r in rows]
    assert [r["event"] for r in timeline if r["source"] == "deployment"] == ["deploy", "rollback"]

    alerts = page.api("alerts", agent=AGENT, limit=200)["alerts"]
    stored = page.sql(
        "SELECT time, kind, severity, version, metric, rollout_id, message FROM coalmine.alerts "
        f"FINAL WHERE agent = '{AGENT}' ORDER BY time DESC"
    )
    assert [list(a.values()) for a in alerts] == [[iso(r[0]), *r[1:]] for r in stored]
    assert any(a["severity"] == "critical" and a["metric"] == "error_rate" for a in alerts)

    rollouts = page.api("rollouts", agent=AGENT)["rollouts"]
    assert rollouts[0]["rollout_id"] == rollout_id
    assert (rollouts[0]["canary_version"], rollouts[0]["phase"]) == (CANARY, "rolled_back")


def _series_and_summary(page: RolledBack) -> tuple[dict[tuple[str, int], list[Any]], ...]:
    series = page.api("series", agent=AGENT, minutes=60)
    assert (series["stable_version"], series["canary_version"]) == (STABLE, CANARY)
    assert [v["role"] for v in series["versions"]] == ["stable", "canary"]
    shown = {
        (version["version"], minute): [version[name][i] for name in SERIES_FIGURES]
        for version in series["versions"]
        for i, minute in enumerate(series["minute"])
        if version["requests"][i] is not None
    }
    summary = {
        (version, minute): [requests, error_rate, p95, cost, quality]
        for minute in series["minute"]
        for version, requests, error_rate, p95, cost, quality in page.sql(
            "SELECT version, requests, error_rate, latency_p95_ms, cost_per_request_usd, "
            "quality_mean FROM coalmine.version_summary(since = toDateTime("
            f"{minute}), until = toDateTime({minute + 60})) WHERE agent = '{AGENT}'"
        )
    }
    return shown, summary


def _series_agrees_with_version_summary(page: RolledBack) -> bool:
    shown, summary = _series_and_summary(page)
    return (
        bool(shown)
        and shown.keys() == summary.keys()
        and all(map(_same_figures, shown.values(), (summary[key] for key in shown)))
    )


def _same_figures(shown: list[Any], stored: list[Any]) -> bool:
    """Equal, but for the last bits of sums added in another order (rollup vs. base rows)."""
    return all(
        a == b if a is None or b is None else a == pytest.approx(b, rel=1e-9)
        for a, b in zip(shown, stored, strict=True)
    )


def test_the_token_in_the_address_becomes_a_cookie_and_the_page_loads(
    rolled_back: RolledBack,
) -> None:
    page = rolled_back
    opened = page.get(f"/?token={page.token}", {"Authorization": ""})
    assert (opened.status, opened.headers["Location"]) == (303, "/")
    cookie = opened.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    with_cookie = {"Authorization": "", "Cookie": cookie.split(";")[0]}
    html = page.get("/", with_cookie)
    assert html.status == 200 and html.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in html.headers["Content-Security-Policy"]
    assert page.get("/api/agents", with_cookie).status == 200
    assert page.get("/static/index.html", with_cookie).body == html.body


def test_the_page_refuses_what_it_must_and_answers_bad_parameters_in_one_line(
    rolled_back: RolledBack,
) -> None:
    page, port = rolled_back, rolled_back.loop.settings.worker_port
    no_token = {"Authorization": ""}
    for path in ("/", "/api/agents", f"/api/series?agent={AGENT}", "/static/index.html"):
        assert page.get(path, {"Host": f"rebound.example:{port}"}).status == 403
        assert page.get(path, {"Origin": "http://evil.example"}).status == 403
        assert page.get(path, no_token).status == 401
        assert page.get(path, {"Authorization": "Bearer guess"}).status == 401
        assert page.get(path, {**no_token, "Cookie": f"{cookie_name(port)}=guess"}).status == 401
        right_token_for_another_port = f"{cookie_name(port + 1)}={page.token}"
        assert page.get(path, {**no_token, "Cookie": right_token_for_another_port}).status == 401
    wrong = page.get("/?token=guess", no_token)
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    rebound = page.get(f"/?token={page.token}", {**no_token, "Host": f"rebound.example:{port}"})
    assert rebound.status == 403 and "Set-Cookie" not in rebound.headers

    good = {
        "Host": f"127.0.0.1:{port}",
        "Authorization": f"Bearer {page.token}",
    }
    posted = request(page.loop, "POST", "/api/agents", {**good, "Content-Length": "2"}, b"{}")
    assert posted.status == 405
    with_body = request(page.loop, "GET", "/api/agents", {**good, "Content-Length": "2"}, b"{}")
    assert with_body.status == 413
    assert page.get(f"/api/alerts?agent={'x' * MAX_QUERY_STRING_CHARS}").status == 414
    for path in ("/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/"):
        assert page.get(path).status == 404, path
    # Faust's own pages (tables, cluster routing, sensors, partition assignment) are not served.
    for path in FAUST_BUILTIN_PAGES:
        assert page.get(path).status == 404, path
        assert page.get(path, no_token).status == 404, path

    bad = {
        "/api/series": "the agent parameter is required",
        f"/api/series?agent={AGENT}&minutes=nan": "minutes must be a whole number",
        f"/api/series?agent={AGENT}&minutes=0": "minutes must be a whole number",
        f"/api/series?agent={AGENT}&minutes=100000": "minutes must be a whole number",
        f"/api/alerts?agent={AGENT}&limit=-1": "limit must be a whole number",
        f"/api/alerts?agent={AGENT}&sort=time": "unknown parameter 'sort'",
        f"/api/evidence?agent={AGENT}&rollout_id=x%27%20OR%20%271%27%3D%271": "rollout_id must",
        "/api/series?agent=%0A": "agent must be",
    }
    for path, error in bad.items():
        answer = page.get(path)
        assert answer.status == 400 and error in answer.json()["error"], (path, answer.body)
        assert "\n" not in answer.json()["error"]

    # A value that would widen the query if it were spliced into the SQL text finds nothing.
    injected = "x' OR 1=1 OR agent != '"
    assert page.api("alerts", agent=injected) == {"alerts": []}
    assert page.api("series", agent=injected)["versions"] == []
    assert page.api("evidence", agent=injected)["rollout_id"] is None
    assert "Traceback" not in page.loop.worker.log_path.read_text(errors="replace")


def test_a_stalled_client_and_a_crowd_of_requests_leave_the_page_and_ingestion_working(
    rolled_back: RolledBack,
) -> None:
    page, settings = rolled_back, rolled_back.loop.settings
    with (
        SpanStream(settings) as spans,
        socket.create_connection((settings.worker_host, settings.worker_port)) as stalled,
    ):
        stalled.sendall(b"GET /api/agents HTTP/1.1\r\nHost: 127.0.0.1")  # and never more
        assert page.get("/api/agents").status == 200

        def ask(_: int) -> Answer:
            return page.get(f"/api/series?agent={AGENT}&minutes=1440")

        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(ask, range(48)))
    statuses = sorted({a.status for a in answers})
    assert set(statuses) <= {200, 429}, statuses
    assert all("error" in a.json() for a in answers if a.status == 429)
    print(f"\n48 requests at once: {[a.status for a in answers].count(429)} answered 429")
    assert page.get("/api/agents").status == 200
    assert page.loop.worker.health()["status"] == "ok"
    # Every span sent meanwhile was stored: the page's queries never held up ingestion.
    query = f"SELECT count() FROM coalmine.spans WHERE agent = '{SpanStream.AGENT}'"
    assert spans.produced > 0
    assert wait_for(page.loop.worker, query, spans.produced) == spans.produced
