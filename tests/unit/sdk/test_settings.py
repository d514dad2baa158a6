"""The SDK's settings: its own variables only, the same definitions and validation as the
worker's :class:`Settings`, which extends them."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from schemas.topics import TRACES
from streams.sdk import SdkSettings, SettingsError
from streams.settings import Settings

SASL = {
    "COALMINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "COALMINE_KAFKA_USERNAME": "svc",
    "COALMINE_KAFKA_PASSWORD": "hunter2",
}
README = Path(__file__).resolve().parents[3] / "README.md"


def sdk_variables() -> list[str]:
    return [f.metadata["env"] for f in fields(SdkSettings)]


def test_the_sdk_reads_its_variables_and_ignores_the_workers() -> None:
    env = {
        **SASL,
        "COALMINE_KAFKA_BOOTSTRAP": "b1:9096,b2:9096",
        "COALMINE_TOPIC_PREFIX": "prod",
        "COALMINE_SDK_QUEUE_MAX_MESSAGES": "500",
        "COALMINE_SDK_QUEUE_MAX_KBYTES": "1024",
        # The worker's: a value that would stop the worker means nothing to an agent.
        "COALMINE_WORKER_PORT": "http",
    }
    settings = SdkSettings.from_env(env)
    assert type(settings) is SdkSettings
    assert (settings.kafka_bootstrap, settings.kafka_security_protocol) == (
        "b1:9096,b2:9096",
        "SASL_SSL",
    )
    assert settings.topic(TRACES) == "prod.traces"
    assert (settings.sdk_queue_max_messages, settings.sdk_queue_max_kbytes) == (500, 1024)


def test_the_workers_settings_are_the_sdks_plus_its_own() -> None:
    env = {**SASL, "COALMINE_TOPIC_PREFIX": "prod", "COALMINE_SDK_QUEUE_MAX_KBYTES": "1024"}
    sdk, worker = SdkSettings.from_env(env), Settings.from_env(env)
    assert isinstance(worker, SdkSettings)
    assert fields(Settings)[: len(fields(SdkSettings))] == fields(SdkSettings)
    assert {f.name: getattr(worker, f.name) for f in fields(SdkSettings)} == vars(sdk)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"COALMINE_SDK_QUEUE_MAX_MESSAGES": "0"},
            "COALMINE_SDK_QUEUE_MAX_MESSAGES must be between 1",
        ),
        (
            {"COALMINE_SDK_QUEUE_MAX_KBYTES": "lots"},
            "COALMINE_SDK_QUEUE_MAX_KBYTES must be an integer",
        ),
        (
            {"COALMINE_SDK_ROUTER_STARTUP_WAIT_S": "-1"},
            "COALMINE_SDK_ROUTER_STARTUP_WAIT_S must be between 0 and 300, not -1.0",
        ),
        (
            {"COALMINE_SDK_ROUTER_STARTUP_WAIT_S": "nan"},
            "COALMINE_SDK_ROUTER_STARTUP_WAIT_S must be a finite number",
        ),
        (
            {"COALMINE_SDK_ROUTER_FETCH_WAIT_MS": "0"},
            "COALMINE_SDK_ROUTER_FETCH_WAIT_MS must be between 1 and 60,000",
        ),
        ({"COALMINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({"COALMINE_TOPIC_PREFIX": "my topics"}, "COALMINE_TOPIC_PREFIX must be 1 to 200"),
        ({**SASL, "COALMINE_KAFKA_PASSWORD": ""}, "SASL_SSL needs COALMINE_KAFKA_USERNAME"),
    ],
)
def test_the_sdk_and_the_worker_refuse_a_bad_value_alike(env: dict[str, str], message: str) -> None:
    for settings in (SdkSettings, Settings):
        with pytest.raises(SettingsError, match=message) as refused:
            settings.from_env(env)
        assert "\n" not in str(refused.value)


def test_settings_from_arguments_are_validated_on_request() -> None:
    settings = SdkSettings(kafka_bootstrap="b1:9092", topic_prefix="prod")
    settings.validate()
    with pytest.raises(SettingsError, match="COALMINE_KAFKA_USERNAME and COALMINE_KAFKA_PASSWORD"):
        SdkSettings(kafka_security_protocol="SASL_PLAINTEXT").validate()


def test_secrets_are_masked_in_the_repr_of_both() -> None:
    for settings in (SdkSettings.from_env(SASL), Settings.from_env(SASL)):
        assert "hunter2" not in repr(settings)
        assert settings.masked()["COALMINE_KAFKA_PASSWORD"] == "***"
        assert settings.as_env()["COALMINE_KAFKA_PASSWORD"] == "hunter2"


def test_the_readme_lists_the_settings_in_order_and_says_which_the_sdk_reads() -> None:
    text = README.read_text(encoding="utf-8")
    table = re.findall(r"^\| `(COALMINE_\w+)` \|", text, re.MULTILINE)
    assert table == [f.metadata["env"] for f in fields(Settings)]
    assert f"The SDK reads\nonly those down to `{sdk_variables()[-1]}`" in text
