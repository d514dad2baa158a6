"""``coalmine otlp``: an OTLP/HTTP receiver that turns GenAI spans into trace events.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` as binary protobuf or OTLP/JSON,
gzipped or not, maps each span (:mod:`streams.otlp.mapping`) and publishes the events to
``coalmine.traces`` through the SDK's publisher, so they take the same validation, pricing,
windows and judge as the SDK's spans. A request is answered 200 only once Kafka has
acknowledged every event it accepted; until then nothing is promised, and when Kafka does not
acknowledge in time (broker down, send queue full) the answer is 503 with ``Retry-After``, so
the exporter sends the request again instead of the spans being lost. A resent span has the
same event id and the worker stores it once. Spans that cannot be mapped are counted and named
in the partial-success answer (``rejected_spans``, ``error_message``), never dropped silently.

It is a process of its own rather than a page of the worker: it is a Kafka producer like the
SDK, so it runs where the agents are, scales apart from the worker (which owns the embedded
database, one per folder), keeps OTLP's own port 4318, and an exporter's flood or a hostile
request never slows ingestion. It needs the ``otlp`` extra, not the worker's libraries.

Who may ask: on a loopback address, only requests whose ``Host`` names this receiver by
address (DNS rebinding sends a name); never one with an ``Origin`` header (a browser page);
with ``COALMINE_OTLP_TOKEN`` set, only ``Authorization: Bearer <token>``. Cost per request is
bounded: the body, compressed and decompressed, by ``COALMINE_OTLP_MAX_BODY_KBYTES``, and at
most ``COALMINE_OTLP_MAX_CONCURRENT_REQUESTS`` requests are read at once (more get 429).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from schemas.trace import TraceEvent
from streams.errors import CoalmineError
from streams.httpguard import bearer_matches, host_allowed, is_loopback
from streams.logs import RateLimitedLog
from streams.otlp import wire
from streams.otlp.mapping import MappedSpans, MappingRules, Rejection, map_spans
from streams.sdk.publisher import CountingPublisher, KafkaPublisher
from streams.settings import Settings

log = logging.getLogger("coalmine.otlp")

PATH = "/v1/traces"
BUSY_RETRY_AFTER_S = 1
UNAVAILABLE_RETRY_AFTER_S = 5
MAX_REASONS_SHOWN = 5
BODY_READ_TIMEOUT_S = 30.0
"""A client that stops sending its body half-way gives its request slot back after this."""
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ReceiverConfig:
    """What the receiver needs of the settings."""

    bind_host: str
    port: int
    token: str
    max_body_bytes: int
    max_concurrent_requests: int
    delivery_timeout_s: float
    rules: MappingRules

    @classmethod
    def from_settings(cls, settings: Settings) -> ReceiverConfig:
        return cls(
            bind_host=settings.otlp_host,
            port=settings.otlp_port,
            token=settings.otlp_token,
            max_body_bytes=settings.otlp_max_body_kbytes * 1024,
            max_concurrent_requests=settings.otlp_max_concurrent_requests,
            delivery_timeout_s=settings.otlp_delivery_timeout_s,
            rules=MappingRules(settings.otlp_agent_keys, settings.otlp_version_keys),
        )


@dataclass(frozen=True)
class Answer:
    status: int
    message: str = ""
    retry_after_s: int | None = None


def refusal(headers: Mapping[str, str], config: ReceiverConfig) -> Answer | None:
    """Why a request is refused before its body is read, or None."""
    host = headers.get("Host", "")
    if is_loopback(config.bind_host) and not host_allowed(host, config.bind_host, config.port):
        return Answer(403, f"Host {host!r} is not this receiver's address")
    if "Origin" in headers:
        return Answer(403, "requests from web pages (with an Origin header) are not accepted")
    if config.token and not bearer_matches(headers.get("Authorization", ""), config.token):
        return Answer(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    if wire.media_type(headers.get("Content-Type", "")) is None:
        return Answer(415, "Content-Type must be application/x-protobuf or application/json")
    length = headers.get("Content-Length")
    if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
        return Answer(413, f"the body is larger than {config.max_body_bytes:,} bytes")
    return None


def summary(rejections: Sequence[Rejection]) -> str:
    """The partial-success message: how many spans were rejected and the first reasons."""
    if not rejections:
        return ""
    reasons: dict[str, Rejection] = {}
    for rejection in rejections:
        reasons.setdefault(rejection.reason, rejection)
    shown = [
        f"{reason} (e.g. span {r.span_id} of trace {r.trace_id})"
        for reason, r in list(reasons.items())[:MAX_REASONS_SHOWN]
    ]
    more = len(reasons) - len(shown)
    return (
        f"{len(rejections)} span(s) rejected: "
        + "; ".join(shown)
        + (f"; and {more} other reason(s)" if more > 0 else "")
    )


def decode_and_map(body: bytes, media: str, encoding: str, config: ReceiverConfig) -> MappedSpans:
    """The request body's spans, mapped; :class:`~streams.otlp.wire.WireError` if unreadable."""
    data = wire.decompressed(body, encoding, config.max_body_bytes)
    spans = wire.spans_of(wire.parse_request(data, media))
    return map_spans(spans, config.rules)


# --- waiting for Kafka --------------------------------------------------------------------


class _Waiter:
    """One request's events, counted down as Kafka acknowledges them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.remaining = count
        self.errors: list[str] = []
        self.done: asyncio.Future[None] = loop.create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class DeliveryTracker:
    """Connects the publisher's delivery reports (on its own thread) to the requests waiting
    for them (on the event loop), by event id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[_Waiter]] = {}

    def expect(self, event_ids: Sequence[str]) -> _Waiter:
        waiter = _Waiter(asyncio.get_running_loop(), len(event_ids))
        with self._lock:
            for event_id in event_ids:
                self._waiting.setdefault(event_id, []).append(waiter)
        return waiter

    def forget(self, event_ids: Iterable[str], waiter: _Waiter) -> None:
        """Stop waiting (answered already); later reports for these ids are ignored."""
        with self._lock:
            for event_id in event_ids:
                waiters = self._waiting.get(event_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiting.pop(event_id, None)

    def delivered(self, event_id: str, error: str | None) -> None:
        """The publisher's ``on_delivery`` listener."""
        finished = []
        with self._lock:
            waiters = self._waiting.pop(event_id, [])
            for waiter in waiters:
                waiter.remaining -= 1
                if error is not None:
                    waiter.errors.append(error)
                if waiter.remaining == 0:
                    finished.append(waiter)
        for waiter in finished:
            waiter.loop.call_soon_threadsafe(waiter.finish)


# --- the HTTP side ------------------------------------------------------------------------


class Receiver:
    """The ``/v1/traces`` handler around a publisher whose ``on_delivery`` is
    :meth:`DeliveryTracker.delivered` of ``tracker``."""

    def __init__(
        self, config: ReceiverConfig, publisher: CountingPublisher, tracker: DeliveryTracker
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.tracker = tracker
        self._slots = config.max_concurrent_requests
        self._warn_rejected = RateLimitedLog(log, logging.WARNING)
        self._warn_unavailable = RateLimitedLog(log, logging.WARNING)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        media = wire.media_type(request.headers.get("Content-Type", "")) or wire.PROTOBUF
        refused = refusal(request.headers, self.config)
        if refused is not None:
            return _response(media, refused, None)
        if self._slots == 0:
            busy = Answer(429, "too many requests at once; retry", BUSY_RETRY_AFTER_S)
            return _response(media, busy, None)
        self._slots -= 1
        try:
            answer, body = await self._export(request, media)
        except Exception:
            log.exception("handling an OTLP export failed")
            answer, body = Answer(500, "internal error (see the receiver's log)"), None
        finally:
            self._slots += 1
        return _response(media, answer, body)

    async def _export(self, request: web.Request, media: str) -> tuple[Answer, bytes | None]:
        try:
            body = await asyncio.wait_for(
                _read_bounded(request, self.config.max_body_bytes), BODY_READ_TIMEOUT_S
            )
        except TimeoutError:
            return Answer(408, f"the body did not arrive within {BODY_READ_TIMEOUT_S:g} s"), None
        if body is None:
            return Answer(
                413, f"the body is larger than {self.config.max_body_bytes:,} bytes"
            ), None
        encoding = request.headers.get("Content-Encoding", "")
        try:
            mapped = await asyncio.get_running_loop().run_in_executor(
                None, decode_and_map, body, media, encoding, self.config
            )
        except wire.WireError as exc:
            return Answer(exc.status, str(exc)), None
        message = summary(mapped.rejections)
        if message:
            self._warn_rejected("%s", message)
        failure = await self._publish(mapped.events)
        if failure is not None:
            return failure, None
        return Answer(200), wire.export_response(media, len(mapped.rejections), message)

    async def _publish(self, events: Sequence[TraceEvent]) -> Answer | None:
        """Publish and wait for Kafka's acknowledgement; the failure answer, or None."""
        if not events:
            return None
        ids = [str(event.event_id) for event in events]
        waiter = self.tracker.expect(ids)
        try:
            dropped_before = self.publisher.stats.dropped
            for event in events:
                self.publisher.publish(event)
            dropped = self.publisher.stats.dropped - dropped_before
            if dropped:
                return self._unavailable(
                    f"{dropped} span(s) could not be queued for Kafka (the send queue is full)"
                )
            try:
                await asyncio.wait_for(asyncio.shield(waiter.done), self.config.delivery_timeout_s)
            except TimeoutError:
                return self._unavailable(
                    f"Kafka did not acknowledge the spans within "
                    f"{self.config.delivery_timeout_s:g} s"
                )
            if waiter.errors:
                return self._unavailable(f"Kafka refused span(s): {waiter.errors[0]}")
            return None
        finally:
            self.tracker.forget(ids, waiter)

    def _unavailable(self, message: str) -> Answer:
        self._warn_unavailable("answering 503: %s", message)
        return Answer(503, message + "; retry later", UNAVAILABLE_RETRY_AFTER_S)


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (also when sent chunked)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _response(media: str, answer: Answer, body: bytes | None) -> web.Response:
    if body is None:
        body = wire.status_response(media, answer.message)
    headers = {} if answer.retry_after_s is None else {"Retry-After": str(answer.retry_after_s)}
    return web.Response(status=answer.status, body=body, content_type=media, headers=headers)


# --- running it ---------------------------------------------------------------------------


async def serve(
    receiver: Receiver, ready: Callable[[], None] | None = None, stop: asyncio.Event | None = None
) -> None:
    """Listen until ``stop`` is set (or forever); ``ready`` is called once listening."""
    config = receiver.config
    # auto_decompress off: the body is inflated here, within the size limit.
    runner = web.AppRunner(receiver.app(), auto_decompress=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.bind_host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise CoalmineError(
                f"cannot listen on {config.bind_host}:{config.port}: {exc.strerror or exc} "
                "(COALMINE_OTLP_HOST, COALMINE_OTLP_PORT)"
            ) from None
        if ready is not None:
            ready()
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def run(settings: Settings) -> int:
    """``coalmine otlp``: serve until interrupted, then flush what was published."""
    config = ReceiverConfig.from_settings(settings)
    tracker = DeliveryTracker()
    publisher = KafkaPublisher.from_settings(settings, on_delivery=tracker.delivered)
    receiver = Receiver(config, publisher, tracker)

    def ready() -> None:
        log.info(
            "listening on http://%s:%d%s, publishing to %s%s",
            config.bind_host,
            config.port,
            PATH,
            publisher.topic,
            " (bearer token required)" if config.token else "",
        )

    try:
        asyncio.run(serve(receiver, ready))
    finally:
        publisher.close()
    return 0
