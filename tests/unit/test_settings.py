from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from schemas.topics import TRACES
from streams.settings import Settings, SettingsError, environment_reference, mask_url


def test_defaults_are_embedded_and_local(tmp_path: Path) -> None:
    settings = Settings.from_env({"COALMINE_HOME": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.clickhouse_url == f"chdb://{tmp_path.resolve()}/chdb"
    assert settings.is_embedded_clickhouse
    assert settings.chdb_path == tmp_path.resolve() / "chdb"
    assert settings.topic(TRACES) == "coalmine.traces"
    assert settings.worker_host == "127.0.0.1"


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "COALMINE_TRACES_PARTITIONS": "8",
            "COALMINE_BATCH_MAX_SECONDS": "0.25",
            "COALMINE_CLICKHOUSE_URL": "http://u:secret@db:8123/coalmine",
        }
    )
    assert settings.traces_partitions == 8
    assert settings.batch_max_seconds == 0.25
    assert not settings.is_embedded_clickhouse


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COALMINE_TRACES_PARTITIONS": "many"}, "COALMINE_TRACES_PARTITIONS must be an integer"),
        ({"COALMINE_TRACES_PARTITIONS": "0"}, "must be at least 1"),
        ({"COALMINE_CLICKHOUSE_URL": "postgres://x"}, "must start with chdb://"),
        ({"COALMINE_CLICKHOUSE_URL": "chdb://relative"}, "absolute path"),
        ({"COALMINE_BATCH_MAX_SECONDS": "-1"}, "must be positive"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_passwords_are_masked() -> None:
    assert mask_url("http://u:secret@db:8123/x") == "http://u:***@db:8123/x"
    masked = Settings.from_env({"COALMINE_CLICKHOUSE_URL": "https://u:pw@h:8443/x"}).masked()
    assert "pw" not in masked["COALMINE_CLICKHOUSE_URL"]


def test_every_setting_is_documented_in_the_reference_and_readme() -> None:
    reference = environment_reference()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for f in fields(Settings):
        assert f"`{f.metadata['env']}`" in reference
        assert f.metadata["env"] in readme, f"{f.metadata['env']} missing from README"


SASL_ENV = {
    "COALMINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "COALMINE_KAFKA_USERNAME": "svc",
    "COALMINE_KAFKA_PASSWORD": "hunter2",
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # Not a number at all, or not a finite one.
        *(
            ({name: raw}, f"{name} must be a finite number, not '{raw}'")
            for name in (
                "COALMINE_BATCH_MAX_SECONDS",
                "COALMINE_SESSION_TIMEOUT_S",
                "COALMINE_ALLOWED_LATENESS_S",
                "COALMINE_MAX_CLOCK_SKEW_S",
            )
            for raw in ("nan", "NaN", "inf", "-Infinity", "1e999")
        ),
        ({"COALMINE_MAX_CLOCK_SKEW_S": "soon"}, "COALMINE_MAX_CLOCK_SKEW_S must be a number"),
        ({"COALMINE_WORKER_PORT": "http"}, "COALMINE_WORKER_PORT must be an integer"),
        ({"COALMINE_SPANS_TTL_DAYS": "1.5"}, "COALMINE_SPANS_TTL_DAYS must be an integer"),
        # Out of range.
        ({"COALMINE_WORKER_PORT": "99999"}, "COALMINE_WORKER_PORT must be between 1 and 65,535"),
        ({"COALMINE_WORKER_PORT": "0"}, "COALMINE_WORKER_PORT must be between 1 and 65,535"),
        ({"COALMINE_BATCH_MAX_SECONDS": "0"}, "must be positive and at most 60, not 0.0"),
        ({"COALMINE_BATCH_MAX_SECONDS": "61"}, "must be positive and at most 60, not 61.0"),
        ({"COALMINE_SESSION_TIMEOUT_S": "5"}, "COALMINE_SESSION_TIMEOUT_S must be between 6"),
        ({"COALMINE_SESSION_TIMEOUT_S": "91"}, "COALMINE_SESSION_TIMEOUT_S must be between 6"),
        ({"COALMINE_ALLOWED_LATENESS_S": "-0.5"}, "between 0 and 3,600, not -0.5"),
        ({"COALMINE_MAX_CLOCK_SKEW_S": "0"}, "COALMINE_MAX_CLOCK_SKEW_S must be positive"),
        ({"COALMINE_SPANS_TTL_DAYS": "-1"}, "COALMINE_SPANS_TTL_DAYS must be between 0 and"),
        ({"COALMINE_WINDOW_SECONDS": "86401"}, "COALMINE_WINDOW_SECONDS must be between 0"),
        ({"COALMINE_BATCH_MAX_EVENTS": "0"}, "COALMINE_BATCH_MAX_EVENTS must be at least 1"),
        ({"COALMINE_REPLICATION_FACTOR": "40000"}, "between 1 and 32,767"),
        # Names from a list.
        ({"COALMINE_LOG_LEVEL": "verbose"}, "COALMINE_LOG_LEVEL must be one of debug, info"),
        ({"COALMINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        (
            {**SASL_ENV, "COALMINE_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "COALMINE_KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        ({"COALMINE_TOPIC_PREFIX": "my topics"}, "COALMINE_TOPIC_PREFIX must be 1 to 200"),
        # Kafka security that cannot work.
        (
            {"COALMINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "SASL_PLAINTEXT needs COALMINE_KAFKA_USERNAME and COALMINE_KAFKA_PASSWORD",
        ),
        ({**SASL_ENV, "COALMINE_KAFKA_PASSWORD": ""}, "SASL_SSL needs COALMINE_KAFKA_USERNAME"),
        (
            {"COALMINE_KAFKA_USERNAME": "svc", "COALMINE_KAFKA_PASSWORD": "pw"},
            "are only used with COALMINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {**SASL_ENV, "COALMINE_KAFKA_CA_FILE": "/nonexistent/ca.pem"},
            "COALMINE_KAFKA_CA_FILE: no such file: /nonexistent/ca.pem",
        ),
        (
            {"COALMINE_KAFKA_CA_FILE": "/nonexistent/ca.pem"},
            "COALMINE_KAFKA_CA_FILE is only used with COALMINE_KAFKA_SECURITY_PROTOCOL=SSL",
        ),
        (
            {**SASL_ENV, "COALMINE_KAFKA_CERT_FILE": "/x/client.pem"},
            "COALMINE_KAFKA_CERT_FILE and COALMINE_KAFKA_KEY_FILE go together",
        ),
        (
            {**SASL_ENV, "COALMINE_KAFKA_KEY_PASSWORD": "kp"},
            "COALMINE_KAFKA_KEY_PASSWORD is set but COALMINE_KAFKA_KEY_FILE is not",
        ),
    ],
)
def test_values_that_cannot_work_are_refused_in_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("env", "attribute", "value"),
    [
        ({"COALMINE_WORKER_PORT": "65535"}, "worker_port", 65535),
        ({"COALMINE_ALLOWED_LATENESS_S": "0"}, "allowed_lateness_s", 0.0),
        ({"COALMINE_SESSION_TIMEOUT_S": "6"}, "session_timeout_s", 6.0),
        ({"COALMINE_SPANS_TTL_DAYS": "0"}, "spans_ttl_days", 0),
        ({"COALMINE_LOG_LEVEL": "DEBUG"}, "log_level", "debug"),
        (
            {**SASL_ENV, "COALMINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"},
            "kafka_security_protocol",
            "SASL_SSL",
        ),
        (
            {**SASL_ENV, "COALMINE_KAFKA_SASL_MECHANISM": "scram-sha-256"},
            "kafka_sasl_mechanism",
            "SCRAM-SHA-256",
        ),
    ],
)
def test_values_at_the_edges_and_in_any_case_are_accepted(
    env: dict[str, str], attribute: str, value: object
) -> None:
    assert getattr(Settings.from_env(env), attribute) == value


def test_tls_files_that_exist_are_accepted(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    settings = Settings.from_env(
        {
            **SASL_ENV,
            "COALMINE_KAFKA_CA_FILE": str(tmp_path / "ca.pem"),
            "COALMINE_KAFKA_CERT_FILE": str(tmp_path / "client.pem"),
            "COALMINE_KAFKA_KEY_FILE": str(tmp_path / "client.key"),
            "COALMINE_KAFKA_KEY_PASSWORD": "kp",
        }
    )
    assert settings.kafka_ca_file == tmp_path / "ca.pem"


def test_a_clickhouse_url_with_a_bad_scheme_is_not_echoed() -> None:
    for url in ("postgres://u:topsecret@db/x", "u:topsecret@db:8123", "topsecret"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"COALMINE_CLICKHOUSE_URL": url})
        assert "topsecret" not in str(refused.value)
        assert "must start with chdb://" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:secret@db:8123/x", "http://u:***@db:8123/x"),
        ("http://token@db:8123/x", "http://***@db:8123/x"),
        ("https://:secret@db/x", "https://:***@db/x"),
        ("http://db:8123/x?password=secret&database=c", "http://db:8123/x?password=***&database=c"),
        ("http://db/x?access_token=secret", "http://db/x?access_token=***"),
        ("http://db:8123/coalmine", "http://db:8123/coalmine"),
        ("chdb:///abs/path", "chdb:///abs/path"),
        ("http://secret@[::1", "***"),
    ],
)
def test_mask_url_hides_passwords_tokens_and_secret_parameters(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_secrets_are_masked_in_display_and_repr_but_passed_to_children() -> None:
    settings = Settings.from_env(
        {
            **SASL_ENV,
            "COALMINE_CLICKHOUSE_URL": "http://token1234@db:8123/x",
        }
    )
    masked = settings.masked()
    assert masked["COALMINE_KAFKA_PASSWORD"] == "***"
    assert masked["COALMINE_KAFKA_KEY_PASSWORD"] == ""
    assert masked["COALMINE_CLICKHOUSE_URL"] == "http://***@db:8123/x"
    for shown in (str(masked), repr(settings), str(settings)):
        assert "hunter2" not in shown and "token1234" not in shown
    assert settings.as_env()["COALMINE_KAFKA_PASSWORD"] == "hunter2"


SLACK = "https://hooks.slack.com/services/T0/B0/very-secret-path"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COALMINE_ALERT_WEBHOOK_URL": "ftp://x/y"}, "must be an http:// or https:// URL"),
        ({"COALMINE_ALERT_WEBHOOK_URL": "https:///no-host"}, "with a host"),
        ({"COALMINE_ALERT_WEBHOOK_URL": "http://h:99999/x"}, "is not a URL"),
        ({"COALMINE_ALERT_WEBHOOK_URL": "https://h/a b"}, "blanks or control characters"),
        ({"COALMINE_ALERT_WEBHOOK_TOKEN": "t"}, "COALMINE_ALERT_WEBHOOK_URL is not"),
        (
            {"COALMINE_ALERT_WEBHOOK_URL": SLACK, "COALMINE_ALERT_WEBHOOK_TOKEN": "a\r\nX: y"},
            "printable ASCII without blanks",
        ),
        (
            {
                "COALMINE_ALERT_WEBHOOK_URL": "http://chat.example/h",
                "COALMINE_ALERT_WEBHOOK_TOKEN": "t",
            },
            "would travel in clear",
        ),
        ({"COALMINE_ALERT_WEBHOOK_ATTEMPTS": "0"}, "COALMINE_ALERT_WEBHOOK_ATTEMPTS must be"),
        ({"COALMINE_ALERT_WEBHOOK_TIMEOUT_S": "nan"}, "COALMINE_ALERT_WEBHOOK_TIMEOUT_S"),
        ({"COALMINE_ALERT_WEBHOOK_QUEUE": "0"}, "COALMINE_ALERT_WEBHOOK_QUEUE must be"),
    ],
)
def test_a_bad_webhook_is_one_line_that_never_shows_the_url(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env(env)
    assert "\n" not in str(refused.value)
    assert "secret-path" not in str(refused.value) and "chat.example" not in str(refused.value)


def test_a_webhook_url_and_token_are_secrets() -> None:
    local = {"COALMINE_ALERT_WEBHOOK_URL": "http://127.0.0.1:9000/h"}
    assert Settings.from_env({**local, "COALMINE_ALERT_WEBHOOK_TOKEN": "t0k"}).alert_webhook_token
    settings = Settings.from_env(
        {"COALMINE_ALERT_WEBHOOK_URL": SLACK, "COALMINE_ALERT_WEBHOOK_TOKEN": "t0k3n"}
    )
    shown = f"{settings.masked()} {settings!r}"
    assert "secret-path" not in shown and "t0k3n" not in shown
