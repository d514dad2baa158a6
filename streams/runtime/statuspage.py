"""The status page on the worker's web server (what it shows and the JSON it reads:
:mod:`streams.statuspage`): routes, the access token, and the query thread.

Every request is checked before anything else happens: ``Host`` must name the worker
(DNS rebinding), a foreign ``Origin`` is refused, no body is taken, and the token must come as
the page's cookie or as ``Authorization: Bearer``. ``/?token=...`` sets the cookie (HttpOnly,
SameSite=Strict: other sites' pages cannot send it) and redirects to ``/``, so the token leaves
the address bar. Queries run one at a time on a session of their own (read-only, with the
limits of ``coalmine sql``); a few more wait their turn, beyond that a request gets 429.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.errors import CoalmineError
from streams.httpguard import host_allowed, issue_token_file
from streams.runtime.queryrunner import QueryBusyError, QueryRunner, close_on_shutdown
from streams.settings import Settings
from streams.statuspage import queries
from streams.statuspage.address import page_url, token_file
from streams.statuspage.queries import Fetch, Row
from streams.statuspage.requests import AgentQuery, agent_query
from streams.storage import sqlsession

log = logging.getLogger(__name__)


def cookie_name(port: int) -> str:
    """The page's cookie, named after the worker's port: browsers keep cookies per host, not
    per port, so two workers on one machine would otherwise replace each other's token."""
    return f"coalmine_page_token_{port}"


MAX_WAITING_QUERIES = 8
"""Page requests that may wait for the query thread; one page load asks for six."""
MAX_QUERY_STRING_CHARS = 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""uPlot sets element styles, hence ``'unsafe-inline'`` for styles only; no script runs
from anywhere but the worker."""

AgentEndpoint = Callable[[Fetch, AgentQuery], dict[str, Any]]
AGENT_ENDPOINTS: Mapping[str, AgentEndpoint] = {
    "series": queries.series,
    "rollouts": queries.rollouts,
    "evidence": queries.evidence,
    "timeline": queries.timeline,
    "alerts": queries.alerts,
}


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str


def presented_token(headers: Mapping[str, str], cookies: Mapping[str, str], cookie: str) -> str:
    """The token a request carries: the page's cookie (named ``cookie``), else a bearer
    token."""
    scheme, _, bearer = headers.get("Authorization", "").partition(" ")
    return cookies.get(cookie) or (bearer if scheme.lower() == "bearer" else "")


def refusal(
    method: str,
    headers: Mapping[str, str],
    query_string: str,
    *,
    presented: str,
    token: str,
    settings: Settings,
) -> Refusal | None:
    """Why a request is refused, or ``None``; checked before any work is done for it."""
    host = headers.get("Host", "")
    if not host_allowed(host, settings.worker_host, settings.worker_port):
        return Refusal(403, f"Host {host!r} is not this worker's address")
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}":
        return Refusal(403, f"requests from {origin} are not allowed")
    if method not in ("GET", "HEAD"):
        return Refusal(405, "the status page only answers GET")
    if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
        return Refusal(413, "the status page takes no request body")
    if len(query_string) > MAX_QUERY_STRING_CHARS:
        return Refusal(414, f"the query string is longer than {MAX_QUERY_STRING_CHARS} characters")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        return Refusal(401, "open the address the worker logged at start (it holds the token)")
    return None


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by their path under ``static/``, read once: nothing else is served."""
    root = resources.files("streams.statuspage") / "static"
    files: dict[str, tuple[bytes, str]] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                files[prefix + entry.name] = (entry.read_bytes(), kind)

    walk(root, "")
    return files


def install(app: faust.App, settings: Settings) -> None:
    """Add the page, its files and its JSON endpoints to ``app``, with a new token written to
    :func:`token_file`, and log the page's address."""
    token = issue_token_file(token_file(settings))
    cookie = cookie_name(settings.worker_port)
    files = _static_files()
    runner = QueryRunner(
        lambda: sqlsession.connect(settings),
        name="page",
        busy="the status page is answering many requests; try again in a moment",
        max_waiting=MAX_WAITING_QUERIES,
    )

    def refused(request: Request, presented: str | None = None) -> Refusal | None:
        return refusal(
            request.method,
            request.headers,
            request.query_string,
            presented=presented_token(request.headers, request.cookies, cookie)
            if presented is None
            else presented,
            token=token,
            settings=settings,
        )

    def answer(view: View, status: int, document: Mapping[str, Any]) -> Response:
        payload = json.dumps(document, allow_nan=False).encode()
        return view.bytes(
            payload, content_type="application/json", status=status, headers=dict(SECURITY_HEADERS)
        )

    def fetch_on(session: sqlsession.QuerySession) -> Fetch:
        def fetch(sql: str, parameters: Mapping[str, str | int]) -> list[Row]:
            columns, rows = session.run_parameterised(sql, parameters)
            return [dict(zip(columns, row, strict=True)) for row in rows]

        return fetch

    async def run(view: View, work: Callable[[Fetch], dict[str, Any]]) -> Response:
        try:
            document = await runner.call(lambda session: work(fetch_on(session)))
        except QueryBusyError as exc:
            return answer(view, 429, {"error": str(exc)})
        except CoalmineError as exc:
            log.warning("a status page query failed: %s", exc)
            return answer(view, 503, {"error": str(exc)})
        except Exception:
            log.exception("a status page request failed")
            return answer(view, 500, {"error": "internal error (see the worker's log)"})
        return answer(view, 200, document)

    @app.page("/", name="status-page")
    class Page(View):
        async def get(self, request: Request) -> Response:
            from_address = request.query.get("token")
            if (why := refused(request, from_address)) is not None:
                return self.text(why.error, status=why.status, headers=dict(SECURITY_HEADERS))
            if from_address is not None:
                set_cookie = f"{cookie}={token}; HttpOnly; SameSite=Strict; Path=/"
                return self.text(
                    "", status=303, headers={"Location": "/", "Set-Cookie": set_cookie}
                )
            body, kind = files["index.html"]
            return self.bytes(body, headers={**SECURITY_HEADERS, "Content-Type": kind})

    @app.page("/static/{path:.+}", name="status-page-files")
    class Files(View):
        async def get(self, request: Request, path: str) -> Response:
            if (why := refused(request)) is not None:
                return self.text(why.error, status=why.status)
            found = files.get(path)
            if found is None:
                return self.text("not found", status=404)
            body, kind = found
            return self.bytes(body, headers={**SECURITY_HEADERS, "Content-Type": kind})

    @app.page("/api/agents", name="status-agents")
    class Agents(View):
        async def get(self, request: Request) -> Response:
            if (why := refused(request)) is not None:
                return answer(self, why.status, {"error": why.error})
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            return await run(self, lambda fetch: queries.agents(fetch, now))

    for name, endpoint in AGENT_ENDPOINTS.items():
        app.page(f"/api/{name}", name=f"status-{name}")(_agent_view(endpoint, refused, answer, run))

    close_on_shutdown(app, runner, "the status page")

    log.info("status page: %s", page_url(settings, token))


def _agent_view(
    endpoint: AgentEndpoint,
    refused: Callable[[Request], Refusal | None],
    answer: Callable[[View, int, Mapping[str, Any]], Response],
    run: Callable[[View, Callable[[Fetch], dict[str, Any]]], Any],
) -> type[View]:
    class AgentView(View):
        async def get(self, request: Request) -> Response:
            if (why := refused(request)) is not None:
                return answer(self, why.status, {"error": why.error})
            try:
                asked = agent_query(dict(request.query))
            except ValueError as exc:
                return answer(self, 400, {"error": str(exc)})
            result: Response = await run(self, lambda fetch: endpoint(fetch, asked))
            return result

    return AgentView
