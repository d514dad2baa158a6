"""The status page in a real browser (Debian's chromium, driven by Playwright) on a real
rollout in progress: the loop (worker with the detector, controller, SDK router) runs a canary
under traffic, and the page, opened through the address the worker logs, must show the agent,
both versions' per-minute charts, the judge's evidence and the deployment timeline, without a
console error or a failed request, and keep its charts when it refreshes. Markup in an agent's
name (from its spans) and in an alert's message (produced onto the alerts topic) is shown as
text, never run.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, Response, sync_playwright

from schemas.alert import Alert, AlertKind, Severity
from schemas.deployment import DeploymentState
from schemas.plan import RolloutStep
from schemas.topics import ALERTS
from streams.sdk import KafkaPublisher, Tracer
from streams.settings import Settings
from streams.statuspage.address import page_url, read_token
from tests.integration.controller_harness import produce, wait_until
from tests.integration.loop_harness import (
    AGENT,
    CANARY,
    HELD,
    LOOSE,
    STABLE,
    Loop,
    plan,
    running_loop,
)

pytestmark = pytest.mark.integration

MARKUP_AGENT = '<img src=x onerror="document.body.dataset.pwned=1">'
MARKUP_VERSION = "<svg onload=document.body.dataset.pwned=1>"
MARKUP_MESSAGE = "<script>document.body.dataset.pwned = 1</script> <b>error rate</b> up"
SERIES = ("requests", "error_rate", "latency_p95_ms", "cost_per_request_usd", "quality_mean")


@dataclass
class Canary:
    loop: Loop
    deployed: DeploymentState
    token: str

    @property
    def url(self) -> str:
        return page_url(self.loop.settings, self.token)

    def api(self, endpoint: str, **parameters: str | int) -> Any:
        """A JSON endpoint as a script reads it (bearer token, the worker's own Host)."""
        settings = self.loop.settings
        address = f"http://127.0.0.1:{settings.worker_port}/api/{endpoint}"
        request = urllib.request.Request(
            f"{address}?{urllib.parse.urlencode(parameters)}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())


@dataclass
class Watched:
    """What went wrong in the browser: console errors, uncaught exceptions, failed requests."""

    problems: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def page_error(self, error: Exception) -> None:
        self.problems.append(f"uncaught: {error}")

    def failed(self, request: Request) -> None:
        self.problems.append(f"failed: {request.url} {request.failure}")

    def response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status}: {response.url}")


def markup_agent_spans(settings: Settings, requests: int) -> None:
    """Requests of an agent and a version named in markup, through the SDK as an agent sends
    them."""
    publisher = KafkaPublisher.from_settings(settings)
    tracer = Tracer(MARKUP_AGENT, MARKUP_VERSION, publisher)
    for _ in range(requests):
        with tracer.request("answer"):
            pass
    assert publisher.flush(30) == 0
    publisher.close(5)


def markup_alert(deployed: DeploymentState) -> Alert:
    """An alert anyone who may produce to the alerts topic could write."""
    return Alert(
        id="status-page-test-markup",
        time=datetime.now(UTC),
        agent=AGENT,
        version=CANARY,
        rollout_id=deployed.rollout_id,
        kind=AlertKind.CANARY_REGRESSION,
        severity=Severity.WARNING,
        detector="status-page-test",
        message=MARKUP_MESSAGE,
    )


@pytest.fixture(scope="module")
def canary(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    """A canary at 50 % under A/A traffic, judged a few times, still in progress; an agent
    named in markup with traffic of its own; an alert whose message is markup."""
    with running_loop(kafka_settings, tmp_path_factory.mktemp("status-page-browser")) as loop:
        deployed = loop.deploy(plan(RolloutStep(weight=0.5, min_duration_s=HELD), judge=LOOSE))
        page = Canary(loop, deployed, read_token(loop.settings))
        with loop.traffic(canary_error_rate=0.01):
            markup_agent_spans(loop.settings, 20)
            produce(loop.settings, ALERTS, [(AGENT, markup_alert(deployed))])
            waited = time.monotonic()
            for what, condition in ready(page).items():
                assert wait_until(condition, 120), f"the worker never had {what}"
                print(f"\n{what}: {time.monotonic() - waited:.1f} s after the traffic started")
            yield page


def ready(page: Canary) -> dict[str, Callable[[], bool]]:
    """What the worker must answer before the browser opens the page."""

    def judged() -> bool:
        return len(page.api("evidence", agent=AGENT)["verdicts"]) >= 3

    def both_versions_per_minute() -> bool:
        series = page.api("series", agent=AGENT)["versions"]
        drawn = {v["version"]: any(n is not None for n in v["requests"]) for v in series}
        return drawn.get(STABLE, False) and drawn.get(CANARY, False)

    def agent_listed() -> bool:
        return any(a["agent"] == MARKUP_AGENT for a in page.api("agents")["agents"])

    def alert_stored() -> bool:
        alerts = page.api("alerts", agent=AGENT)["alerts"]
        return any(a["message"] == MARKUP_MESSAGE for a in alerts)

    return {
        "three judgements": judged,
        "both versions per minute": both_versions_per_minute,
        "the markup agent": agent_listed,
        "the markup alert": alert_stored,
    }


@pytest.fixture
def browser_page(canary: Canary) -> Iterator[tuple[Page, Watched]]:
    """A fresh chromium page on the status page, the token exchanged for the cookie."""
    watched = Watched()
    with sync_playwright() as playwright:
        chromium = shutil.which("chromium")
        assert chromium is not None, "the browser test needs Debian's chromium (apt-get install)"
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", watched.console)
            page.on("pageerror", watched.page_error)
            page.on("requestfailed", watched.failed)
            page.on("response", watched.response)
            page.goto(canary.url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield page, watched
        finally:
            browser.close()


def figure_attributes(page: Page, selector: str) -> list[dict[str, str]]:
    """The data attributes of the chart figures ``selector`` finds (``data-series-points``
    as ``seriesPoints``)."""
    found: list[dict[str, str]] = page.eval_on_selector_all(
        selector, "figures => figures.map(f => Object.assign({}, f.dataset))"
    )
    return found


def test_the_page_shows_the_rollout_in_a_real_browser(
    canary: Canary, browser_page: tuple[Page, Watched], tmp_path: Path
) -> None:
    page, watched = browser_page
    assert page.url.endswith("/") and "token" not in page.url  # the token left the address

    row = page.locator(f"#agents tr[data-agent='{AGENT}']")
    assert row.get_attribute("aria-selected") == "true"  # the agent with a canary, by default
    assert row.locator("td").all_inner_texts()[:6] == [
        AGENT, "canary", STABLE, CANARY, "50 %", "1/1",
    ]  # fmt: skip
    assert page.locator("#agent-title").inner_text() == AGENT

    series = figure_attributes(page, "#series figure")
    assert [s["metric"] for s in series] == list(SERIES)
    for chart in series:
        assert chart["series"].split(",")[:2] == [STABLE, CANARY], chart
        assert all(int(n) > 0 for n in chart["seriesPoints"].split(",")[:2]), chart

    effects = figure_attributes(page, "#evidence figure.effect")
    e_values = figure_attributes(page, "#evidence figure.e-value")
    judged = canary.api("evidence", agent=AGENT)["metrics"]
    assert len(effects) == len(e_values) == len(judged) > 0
    assert sum(int(f["points"]) for f in effects) > 0
    assert sum(int(f["points"]) for f in e_values) > 0
    assert int(page.locator("#verdict-strip").get_attribute("data-points") or 0) >= 3
    sentence = page.locator("#verdict-sentence").inner_text()
    assert f"verdict on {CANARY} against {STABLE} is" in sentence, sentence

    events = page.locator("#timeline tbody tr td:nth-child(3)").all_inner_texts()
    assert "deploy" in events, events
    rollouts = canary.api("rollouts", agent=AGENT)["rollouts"]
    assert page.locator("#rollout option").count() == len(rollouts) > 0
    assert page.locator("#rollout").input_value() == canary.deployed.rollout_id

    page.locator("#range").select_option("60")
    page.wait_for_selector("#series[data-minutes='60']")

    kept = "#series-requests canvas"
    page.eval_on_selector(kept, "canvas => { canvas.dataset.kept = 'yes'; }")
    shown = page.locator("#refreshed").inner_text()
    page.wait_for_function(
        "shown => document.getElementById('refreshed').textContent !== shown", arg=shown
    )  # a rollout in progress: refreshed within 5 s
    assert page.eval_on_selector(kept, "canvas => canvas.dataset.kept") == "yes"  # not remade

    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the status page: {shot}")
    assert watched.problems == []


def test_markup_in_agent_names_and_alert_messages_is_shown_as_text(
    canary: Canary, browser_page: tuple[Page, Watched]
) -> None:
    page, watched = browser_page
    assert MARKUP_MESSAGE in page.locator("#alerts tbody").all_inner_texts()[0]

    page.locator("#agents tbody tr", has_text=MARKUP_AGENT).click()
    page.wait_for_function(
        "name => document.getElementById('agent-title').textContent === name", arg=MARKUP_AGENT
    )
    linked = page.url
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(linked).fragment) == {
        "agent": [MARKUP_AGENT]
    }
    page.goto("about:blank")
    page.goto(linked)  # a link to the agent keeps it selected
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#agent-title").inner_text() == MARKUP_AGENT
    selected = page.locator("#agents tr[aria-selected='true'] td").first.inner_text()
    assert selected == MARKUP_AGENT
    requests_chart = page.locator("#series-requests")
    page.wait_for_selector(f"#series-requests[data-series='{MARKUP_VERSION}']")
    assert MARKUP_VERSION in requests_chart.locator(".u-legend").inner_text()  # the legend

    assert page.locator("main img, main script, main b, main svg").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
    assert watched.problems == []


def test_a_token_no_longer_valid_shows_how_to_get_back_in(
    canary: Canary, browser_page: tuple[Page, Watched]
) -> None:
    page, watched = browser_page
    banner = page.locator("#error")
    assert banner.is_hidden()
    page.context.clear_cookies()  # as after a worker's restart, which issues a new token
    banner.wait_for(state="visible", timeout=15_000)  # at the next refresh
    assert "Open the address the worker logged" in banner.inner_text()
    assert page.locator("#agent-title").inner_text() == AGENT  # what was shown stays
    assert watched.problems and all("401" in problem for problem in watched.problems)

    page.goto(canary.url)
    page.wait_for_selector("body[data-ready='1']")
    assert banner.is_hidden()
