"""docker-compose.yml cannot run here (no Docker); check what can go wrong without running it:
services missing, settings it sets that do not exist, ports open beyond loopback, version drift."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.devtools.localkafka import KAFKA_VERSION
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whichever of compose's two spellings it uses."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_kafka_clickhouse_and_the_worker_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "clickhouse", "worker"} <= services.keys()
    assert services["worker"]["build"] == "."
    assert services["worker"]["command"] == ["worker"]
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_kafka_is_the_version_the_local_broker_runs(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_every_coalmine_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    known = {f.metadata["env"] for f in fields(Settings)}
    used = {
        (name, key)
        for name, service in services.items()
        for key in _environment(service)
        if key.startswith("COALMINE_")
    }
    assert used, "the worker is configured through COALMINE_* variables"
    assert {(name, key) for name, key in used if key not in known} == set()


def test_the_worker_is_wired_to_the_kafka_and_clickhouse_services(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _environment(services["worker"])
    kafka_env = _environment(services["kafka"])
    assert f"DOCKER://{env['COALMINE_KAFKA_BOOTSTRAP']}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["COALMINE_CLICKHOUSE_URL"].startswith("http://")
    assert "@clickhouse:8123/" in env["COALMINE_CLICKHOUSE_URL"]
    assert Settings.from_env(env).clickhouse_url == env["COALMINE_CLICKHOUSE_URL"]
    assert set(services["worker"]["depends_on"]) == {"kafka", "clickhouse"}


def test_published_ports_bind_to_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # the long syntax
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_dockerfile_runs_the_worker_as_an_unprivileged_user() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert 'ENTRYPOINT ["coalmine"]' in lines
    assert 'CMD ["worker"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
