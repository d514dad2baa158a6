"""``coalmine otlp`` end to end: the real OpenTelemetry SDK and OTLP/HTTP exporter → the
receiver process → real Kafka → ``coalmine worker`` → chDB spans; and the requests it refuses."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status, StatusCode

from schemas.topics import TRACES_DLQ
from streams.devtools import localkafka
from streams.devtools.otlp_process import running_receiver
from streams.devtools.worker_process import WorkerProcess
from streams.otlp.mapping import event_id_of
from streams.settings import Settings
from tests.integration.harness import consume_all, wait_for, worker
from tests.unit.test_readme_examples import python_block

pytestmark = pytest.mark.integration
__all__ = ["worker"]  # the fixture, imported for the tests below

TOKEN = "otlp-test-token"
AGENT_SPAN_FIELDS = (
    "name, toString(kind), agent, version, parent_span_id, provider, model, input_tokens, "
    "output_tokens, cached_input_tokens, tool_name, toString(status), error_type, "
    "task_completed, quality_score, toString(event_id)"
)


@pytest.fixture
def receiver(worker: WorkerProcess, tmp_path: Path) -> Iterator[Settings]:
    settings = replace(worker.settings, otlp_token=TOKEN, otlp_max_body_kbytes=256)
    with running_receiver(settings, tmp_path / "otlp.log") as running:
        yield running


class Keeping(SpanExporter):
    """Keeps every finished span, to export the same spans again as a retry would."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def exporter(settings: Settings, **kwargs: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{settings.otlp_port}/v1/traces",
        headers={"Authorization": f"Bearer {TOKEN}"},
        **kwargs,
    )


def run_agent(provider: TracerProvider, tasks: int) -> None:
    """A small agent: each task is invoke_agent → chat → execute_tool (every third fails)."""
    tracer = provider.get_tracer("support-bot-agent")
    for i in range(tasks):
        with tracer.start_as_current_span("invoke_agent support-bot") as task:
            task.set_attributes(
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "support-bot",
                    "coalmine.task_completed": i % 3 != 0,
                    "coalmine.quality_score": 0.75,
                }
            )
            with tracer.start_as_current_span("chat gpt-4o-mini") as chat:
                chat.set_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.system": "openai",  # the older generation, as openai-v2 sends
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": 800 + i,
                        "gen_ai.usage.output_tokens": 90,
                        "gen_ai.usage.cache_read.input_tokens": 512,
                        "gen_ai.input.messages": '[{"role":"user","parts":["secret"]}]',
                    }
                )
            with tracer.start_as_current_span("execute_tool lookup_order") as tool:
                tool.set_attributes(
                    {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order"}
                )
                if i % 3 == 0:
                    tool.set_attribute("error.type", "TimeoutError")
                    tool.set_status(Status(StatusCode.ERROR, "lookup timed out"))


def test_an_instrumented_agent_becomes_rows_exactly_once(
    worker: WorkerProcess, receiver: Settings
) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "service.version": "v12"})
    )
    kept = Keeping()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    provider.add_span_processor(
        BatchSpanProcessor(exporter(receiver, compression=Compression.Gzip))
    )
    run_agent(provider, tasks=30)
    assert provider.force_flush(30_000)
    # The exporter's retry after a lost answer: the same spans again, in other batches.
    retry = exporter(receiver)
    assert retry.export(kept.spans[:45]) is SpanExportResult.SUCCESS
    assert retry.export(kept.spans) is SpanExportResult.SUCCESS
    provider.shutdown()

    assert wait_for(worker, "SELECT count() FROM coalmine.spans", 90) == 90
    query = f"SELECT {AGENT_SPAN_FIELDS} FROM coalmine.spans ORDER BY start_time"
    rows = [tuple(row) for row in worker.sql(query)]
    assert len({row[-1] for row in rows}) == 90
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    task, chat, tool = (
        by_name["invoke_agent support-bot"][0],
        by_name["chat gpt-4o-mini"][0],
        by_name["execute_tool lookup_order"][0],
    )
    assert task[1:5] == ("request", "support-bot", "v12", "")
    assert (task[13], task[14]) == (False, 0.75)  # the first task failed
    assert chat[1:4] == ("llm", "support-bot", "v12")
    assert chat[5:11] == ("openai", "gpt-4o-mini", 800, 90, 512, "")
    assert tool[1] == "tool" and tool[10:13] == ("lookup_order", "error", "TimeoutError")
    assert chat[4] == tool[4] != ""  # both children of the task span
    by_span = {span.context.span_id: span for span in kept.spans}
    first_task = min(
        (s for s in by_span.values() if s.name.startswith("invoke_agent")),
        key=lambda s: s.start_time or 0,
    )
    assert task[-1] == str(
        event_id_of(f"{first_task.context.trace_id:032x}", f"{first_task.context.span_id:016x}")
    )
    assert (
        worker.scalar(
            "SELECT countIf(mapContains(attributes, 'gen_ai.input.messages')) FROM coalmine.spans"
        )
        == 0
    )
    # A retry is the same message: nothing was refused as a conflicting duplicate.
    assert consume_all(worker.settings, worker.settings.topic(TRACES_DLQ), 1, timeout_s=3) == []


def post(
    settings: Settings,
    body: bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/v1/traces",
) -> tuple[int, dict[str, str], bytes]:
    base = {
        "Content-Type": "application/x-protobuf",
        "Authorization": f"Bearer {TOKEN}",
        "Host": f"127.0.0.1:{settings.otlp_port}",
    }
    connection = http.client.HTTPConnection("127.0.0.1", settings.otlp_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={**base, **(headers or {})})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def json_span(span_id: str, **attributes: Any) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "traceId": "5B8EFFF798038103D269B633813FC60C",  # hex, upper case is allowed
        "spanId": span_id,
        "name": "answer",
        "kind": 1,
        "startTimeUnixNano": str(now - 2_000_000),
        "endTimeUnixNano": str(now),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
        "status": {"code": 1},
    }


def test_otlp_json_with_hex_ids_and_a_partial_success(
    worker: WorkerProcess, receiver: Settings
) -> None:
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-bot"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "hand-written"},
                        "spans": [
                            json_span("EEE19B7EC3C1B174", **{"gen_ai.agent.version": "v3"}),
                            json_span("eee19b7ec3c1b175"),  # no version anywhere: rejected
                        ],
                        "someFutureField": True,  # unknown fields are ignored
                    }
                ],
            }
        ]
    }
    status, headers, body = post(
        receiver, json.dumps(document).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)["partialSuccess"]
    assert int(answer["rejectedSpans"]) == 1
    assert answer["errorMessage"].startswith("1 span(s) rejected: no version")
    assert wait_for(worker, "SELECT count() FROM coalmine.spans", 1) == 1
    assert worker.sql("SELECT trace_id, span_id, agent, version FROM coalmine.spans") == [
        ["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "json-bot", "v3"]
    ]


def garbage_and_bombs(limit: int) -> list[tuple[str, dict[str, str], bytes, int]]:
    request = ExportTraceServiceRequest().SerializeToString()
    return [
        ("wrong content type", {"Content-Type": "text/plain"}, request, 415),
        ("no token", {"Authorization": ""}, request, 401),
        ("a wrong token", {"Authorization": "Bearer otlp-test-tokem"}, request, 401),
        ("another host name", {"Host": "attacker.example:4318"}, request, 403),
        ("a web page", {"Origin": "http://attacker.example"}, request, 403),
        ("garbage protobuf", {}, b"\xff\xff\xff\xff garbage", 400),
        ("JSON that is no request", {"Content-Type": "application/json"}, b"[1, 2]", 400),
        (
            "ids that are not hex",
            {"Content-Type": "application/json"},
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
            400,
        ),
        ("a body over the limit", {}, b"\0" * (limit + 1), 413),
        ("a gzip bomb", {"Content-Encoding": "gzip"}, gzip.compress(b"\0" * (64 * limit)), 413),
        ("broken gzip", {"Content-Encoding": "gzip"}, b"\x1f\x8b not gzip", 400),
        ("an unknown encoding", {"Content-Encoding": "br"}, request, 415),
    ]


def test_hostile_requests_are_refused_with_a_status(receiver: Settings) -> None:
    limit = receiver.otlp_max_body_kbytes * 1024
    for what, headers, body, expected in garbage_and_bombs(limit):
        status, reply_headers, reply = post(receiver, body, headers)
        assert status == expected, (what, status, reply)
        if reply_headers["Content-Type"].startswith("application/x-protobuf"):
            assert RpcStatus.FromString(reply).message, what
    assert post(receiver, b"", method="GET")[0] == 405
    assert post(receiver, b"", path="/v1/metrics")[0] == 404
    # Still answering, and an empty export is a full success.
    status, _, reply = post(receiver, ExportTraceServiceRequest().SerializeToString())
    assert status == 200
    assert not ExportTraceServiceResponse.FromString(reply).HasField("partial_success")


def test_a_bad_token_fails_the_real_exporter(receiver: Settings) -> None:
    wrong = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{receiver.otlp_port}/v1/traces",
        headers={"Authorization": "Bearer nope"},
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "x"}))
    kept = Keeping()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    provider.get_tracer("t").start_span("s").end()
    assert wrong.export(kept.spans) is SpanExportResult.FAILURE


def test_a_full_house_is_answered_429_and_a_stalled_body_frees_its_slot(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = replace(kafka_settings, otlp_max_concurrent_requests=1)
    with running_receiver(settings, tmp_path / "otlp.log") as running:
        stalled = socket.create_connection(("127.0.0.1", running.otlp_port))
        try:
            stalled.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                b"Content-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n"
                % running.otlp_port
            )
            time.sleep(0.5)
            status, headers, _ = post(running, ExportTraceServiceRequest().SerializeToString())
            assert status == 429 and headers["Retry-After"] == "1"
        finally:
            stalled.close()
        time.sleep(0.5)
        assert post(running, ExportTraceServiceRequest().SerializeToString())[0] == 200


def test_without_a_broker_spans_are_refused_503_never_accepted(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    nowhere = replace(
        kafka_settings,
        kafka_bootstrap=f"127.0.0.1:{localkafka.free_loopback_port()}",
        otlp_delivery_timeout_s=1.0,
    )
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "bot"}},
                        {"key": "service.version", "value": {"stringValue": "v1"}},
                    ]
                },
                "scopeSpans": [{"spans": [json_span("eee19b7ec3c1b174")]}],
            }
        ]
    }
    with running_receiver(nowhere, tmp_path / "otlp.log") as running:
        status, headers, body = post(
            running, json.dumps(document).encode(), {"Content-Type": "application/json"}
        )
    assert status == 503 and headers["Retry-After"] == "5"
    assert "did not acknowledge" in json.loads(body)["message"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COALMINE_OTLP_HOST": "0.0.0.0"}, "set COALMINE_OTLP_TOKEN too"),
        ({"COALMINE_OTLP_PORT": "70000"}, "COALMINE_OTLP_PORT must be between 1 and 65,535"),
        ({"COALMINE_OTLP_MAX_BODY_KBYTES": "lots"}, "must be an integer"),
    ],
)
def test_bad_settings_stop_it_with_one_line(env: dict[str, str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "otlp"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr


def test_a_port_in_use_is_one_line(kafka_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "streams.cli", "otlp"],
            env={**os.environ, **kafka_settings.as_env(), "COALMINE_OTLP_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("coalmine: error: cannot listen on")


def test_the_readme_opentelemetry_example_lands_in_the_spans(
    worker: WorkerProcess, receiver: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.otlp_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")
    example = python_block("OTLPSpanExporter(")
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})
    assert wait_for(worker, "SELECT count() FROM coalmine.spans", 3) == 3
    rows = worker.sql(
        "SELECT toString(kind), agent, version, model, cached_input_tokens, tool_name, "
        "task_completed, quality_score, toString(cost_source) FROM coalmine.spans ORDER BY kind"
    )
    assert [tuple(row) for row in rows] == [
        ("request", "support-bot", "v12", "", 0, "", True, 0.8, "price_table"),
        ("llm", "support-bot", "v12", "gpt-4o-mini", 512, "", None, None, "price_table"),
        ("tool", "support-bot", "v12", "", 0, "lookup_order", None, None, "price_table"),
    ]
