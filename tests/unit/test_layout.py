"""What the layers import: a traced agent loads none of the worker's libraries, and the pure
ingest code no Kafka or ClickHouse client. Each import runs in a fresh interpreter, since
this one has loaded everything already. (tests/integration/test_sdk_wheel.py runs the SDK
where the worker's libraries are not even installed; this catches an import in seconds.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection

import pytest

from streams.cli import WORKER_EXTRA_MODULES

CLIENTS = ("faust", "mode", "aiokafka", "confluent_kafka", "chdb", "clickhouse_connect")


def top_level_modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("from streams.sdk import KafkaPublisher, SdkSettings, Tracer", WORKER_EXTRA_MODULES),
        ("import streams.ingest.route, streams.ingest.aggregate, streams.ingest.pricing", CLIENTS),
        # An operator's `coalmine deploy` or `status` is a Kafka client, nothing more.
        ("import streams.controller.client, streams.controller.commands", WORKER_EXTRA_MODULES),
        # So is a person reading alerts with `coalmine alerts`.
        ("import streams.alerts.cli, streams.alerts.show", WORKER_EXTRA_MODULES),
        # The status page's queries and parameters are pure: the worker hands them a fetch.
        ("import streams.statuspage.queries, streams.statuspage.requests", CLIENTS),
        # The registry names value models without loading them: window stats need numpy.
        ("import schemas.topics", (*WORKER_EXTRA_MODULES, "confluent_kafka", "pydantic")),
    ],
)
def test_a_layer_imports_none_of_what_it_must_not_need(
    statement: str, forbidden: Collection[str]
) -> None:
    assert top_level_modules_after(statement) & set(forbidden) == set()


@pytest.mark.parametrize(
    "module",
    [
        "streams.cli",
        "streams.runtime.app",
        "streams.runtime.worker",
        "streams.devtools.bench.discarding_worker",
        "streams.sdk.kafka_security",
        "schemas.topics",
    ],
)
def test_an_entry_point_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """What `python -m` or a first import loads must not meet an import cycle (one did: the
    benchmark's worker imported the Kafka security module before the SDK package)."""
    run = subprocess.run(
        [sys.executable, "-c", f"import {module}"], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
