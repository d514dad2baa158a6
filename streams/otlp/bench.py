"""``coalmine bench otlp``: spans/s through the OTLP receiver into Kafka, beside the SDK
publisher's own rate, in the same run on the same broker.

* receiver: ``spans`` GenAI spans (a third each invoke_agent, chat, execute_tool) as binary
  protobuf ``ExportTraceServiceRequest``s of 512 spans, the batch the OpenTelemetry
  ``BatchSpanProcessor`` sends, built before the clock starts and posted by
  ``COALMINE_OTLP_MAX_CONCURRENT_REQUESTS`` clients at once to a ``coalmine otlp`` process.
  A request is answered once Kafka has acknowledged its spans, so spans/s is spans into the
  broker: all spans over the time from the first request sent to the last answer.
* SDK: the same number of trace events published by a ``KafkaPublisher`` in this process,
  from the first ``publish`` until ``flush`` returns with every one delivered.

The two alternate for three rounds; the best of each is compared.
"""

from __future__ import annotations

import http.client
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streams.devtools import localkafka
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.devtools.otlp_process import running_receiver
from streams.errors import CoalmineError
from streams.otlp import wire
from streams.otlp.mapping import MappingRules, map_spans
from streams.sdk.publisher import KafkaPublisher
from streams.settings import Settings
from streams.topics import ensure_topics

BATCH_SPANS = 512
"""``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``'s default."""
ROUNDS = 3
STEPS: tuple[tuple[str, dict[str, str | int]], ...] = (
    ("invoke_agent", {"gen_ai.agent.name": "bench-bot"}),
    (
        "chat",
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 812,
            "gen_ai.usage.output_tokens": 96,
            "gen_ai.usage.cache_read.input_tokens": 512,
        },
    ),
    ("execute_tool", {"gen_ai.tool.name": "lookup_order"}),
)


def run(settings: Settings, *, spans: int) -> int:
    batches = requests_of(spans, time.time_ns())
    total = sum(len(batch.resource_spans[0].scope_spans[0].spans) for batch in batches)
    bodies = [batch.SerializeToString() for batch in batches]
    say(
        f"OTLP benchmark: {total:,} spans in {len(bodies)} protobuf requests of up to "
        f"{BATCH_SPANS} ({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each), "
        f"{settings.otlp_max_concurrent_requests} concurrent clients"
    )
    stamp = datetime.now(UTC).strftime("%H%M%S")
    with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        local = local_address(settings)
        if local is not None and not process.answers(*local):
            cleanup.enter_context(localkafka.LocalKafka(settings))
        receiver_side = replace(settings, topic_prefix=f"bench-otlp-{stamp}")
        sdk_side = replace(settings, topic_prefix=f"bench-sdk-{stamp}")
        ensure_topics(receiver_side)
        ensure_topics(sdk_side)
        receiver_rates, sdk_rates = [], []
        with running_receiver(receiver_side, Path(tmp) / "otlp.log") as running:
            post(running, bodies[:1])  # connections and the producer warmed up
            # Alternated and compared best against best, so that a slow spell of a shared
            # machine does not land on one side only.
            for round_ in range(1, ROUNDS + 1):
                receiver_rates.append(total / post(running, bodies))
                sdk_rates.append(total / publish(sdk_side, batches))
                say(
                    f"  round {round_}: receiver {receiver_rates[-1]:,.0f} spans/s, "
                    f"SDK {sdk_rates[-1]:,.0f} spans/s"
                )
    receiver_rate, sdk_rate = max(receiver_rates), max(sdk_rates)
    say("")
    say(f"{'best of ' + str(ROUNDS):34}{'spans/s':>12}")
    say(f"{'OTLP receiver into Kafka':34}{receiver_rate:>12,.0f}")
    say(f"{'SDK publisher into Kafka':34}{sdk_rate:>12,.0f}")
    say(f"{'ratio receiver/SDK':34}{receiver_rate / sdk_rate:>12.2f}")
    say(f"machine: {os.cpu_count()} cores; receiver and SDK on the same broker")
    return 0


def requests_of(count: int, start_ns: int) -> list[ExportTraceServiceRequest]:
    """``count`` spans as requests of :data:`BATCH_SPANS`: traces of three spans, each with
    its own ids, under one resource naming the agent's version."""
    requests = []
    for first in range(0, count, BATCH_SPANS):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(
            [_pair("service.name", "bench-bot"), _pair("service.version", "v1")]
        )
        scope = resource_spans.scope_spans.add()
        scope.scope.name = "coalmine-bench"
        for i in range(first, min(first + BATCH_SPANS, count)):
            operation, attributes = STEPS[i % 3]
            span = scope.spans.add()
            span.trace_id = (i // 3 + 1).to_bytes(16, "big")
            span.span_id = (i + 1).to_bytes(8, "big")
            if i % 3:
                span.parent_span_id = (i - i % 3 + 1).to_bytes(8, "big")
            span.name = f"{operation} bench"
            span.kind = Span.SPAN_KIND_INTERNAL
            span.start_time_unix_nano = start_ns + i * 1000
            span.end_time_unix_nano = start_ns + i * 1000 + 250_000_000
            span.attributes.extend(
                [_pair("gen_ai.operation.name", operation)]
                + [_pair(key, value) for key, value in attributes.items()]
            )
        requests.append(request)
    return requests


def _pair(key: str, value: str | int) -> KeyValue:
    wrapped = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
    return KeyValue(key=key, value=wrapped)


def post(settings: Settings, bodies: Sequence[bytes]) -> float:
    """Seconds to have every body answered 200 by the receiver, several clients at once."""
    clients = settings.otlp_max_concurrent_requests

    def send(share: Sequence[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", settings.otlp_port, timeout=60)
        try:
            for body in share:
                connection.request(
                    "POST", "/v1/traces", body=body, headers={"Content-Type": wire.PROTOBUF}
                )
                reply = connection.getresponse()
                answer = reply.read()
                if reply.status != 200:
                    raise CoalmineError(f"the receiver answered {reply.status}: {answer[:200]!r}")
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(send, bodies[i::clients]) for i in range(clients)]:
            done.result()
    return time.perf_counter() - started


def publish(settings: Settings, requests: Sequence[ExportTraceServiceRequest]) -> float:
    """Seconds for the SDK publisher to deliver the same spans, as trace events."""
    events = [
        event
        for request in requests
        for event in map_spans(wire.spans_of(request), MappingRules()).events
    ]
    publisher = KafkaPublisher.from_settings(settings)
    try:
        publisher.publish(events[0])  # connected before the clock starts
        publisher.flush(30)
        started = time.perf_counter()
        for event in events:
            publisher.publish(event)
        if publisher.flush(300):
            raise CoalmineError("the SDK publisher did not deliver every span in 300 s")
        elapsed = time.perf_counter() - started
    finally:
        publisher.close()
    if publisher.stats.dropped or publisher.stats.failed:
        raise CoalmineError(f"the SDK publisher lost spans: {publisher.stats}")
    return elapsed


def say(message: str) -> None:
    print(message, flush=True)
