"""The local broker's pure logic: bootstrap parsing, rendered files, pid decisions. No I/O."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools import localkafka
from streams.devtools.localkafka.config import (
    KAFKA_VERSION,
    RELOAD4J_VERSION,
    SCALA_VERSION,
    BrokerPaths,
    SaslListener,
    UpAction,
    broker_paths,
    decide_up,
    escape_property,
    is_broker_cmdline,
    jars_dir,
    java_command,
    last_lines,
    local_address,
    maven_failure_summary,
    new_cluster_id,
    parse_local_bootstrap,
    read_pid,
    render_pom,
    render_server_properties,
)
from streams.errors import LocalKafkaError
from streams.settings import Settings


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost:19092", ("127.0.0.1", 19092)),
        (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
        ("127.0.0.1", ("127.0.0.1", 9092)),
    ],
)
def test_bootstrap_on_loopback_is_accepted(bootstrap: str, expected: tuple[str, int]) -> None:
    assert parse_local_bootstrap(bootstrap) == expected


@pytest.mark.parametrize(
    ("bootstrap", "complaint"),
    [
        ("0.0.0.0:9092", "only listens on 127.0.0.1"),
        ("kafka:9092", "only listens on 127.0.0.1"),
        ("10.0.0.5:9092", "only listens on 127.0.0.1"),
        ("127.0.0.1:9092,127.0.0.1:9093", "one address"),
        ("", "one address"),
        ("127.0.0.1:http", "no valid port"),
        ("127.0.0.1:0", "no valid port"),
        ("127.0.0.1:65536", "no valid port"),
        ("127.0.0.1:", "no valid port"),
        ("127.0.0.1:\uff19\uff10", "no valid port"),  # fullwidth digits: isdigit() but not a port
    ],
)
def test_bootstrap_elsewhere_is_refused_with_a_reason(bootstrap: str, complaint: str) -> None:
    with pytest.raises(LocalKafkaError, match=complaint):
        parse_local_bootstrap(bootstrap)


def test_server_properties_describe_a_one_node_kraft_cluster_on_loopback() -> None:
    props = _properties(
        render_server_properties(port=19092, controller_port=19093, data_dir=Path("/d/data"))
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == "/d/data"
    assert props["auto.create.topics.enable"] == "true"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key, value in props.items():
        if key.endswith(("replication.factor", "min.isr")):
            assert value == "1", key


def test_the_default_broker_has_no_sasl_listener() -> None:
    text = render_server_properties(port=19092, controller_port=19093, data_dir=Path("/d"))
    assert "SASL" not in text and "sasl" not in text


def test_a_sasl_listener_serves_plain_and_scram_beside_plaintext() -> None:
    sasl = SaslListener(port=19094, users=(("alice", "a-secret"), ("bob", "b-secret")))
    props = _properties(
        render_server_properties(port=19092, controller_port=19093, data_dir=Path("/d"), sasl=sasl)
    )
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19094"
    )
    assert props["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_alice="a-secret" user_bob="b-secret";'
    )
    for mechanism in ("scram-sha-256", "scram-sha-512"):
        assert (
            "ScramLoginModule required;"
            in props[f"listener.name.sasl_plaintext.{mechanism}.sasl.jaas.config"]
        )
    assert sasl.format_arguments() == [
        "--add-scram", "SCRAM-SHA-256=[name=alice,password=a-secret]",
        "--add-scram", "SCRAM-SHA-512=[name=alice,password=a-secret]",
        "--add-scram", "SCRAM-SHA-256=[name=bob,password=b-secret]",
        "--add-scram", "SCRAM-SHA-512=[name=bob,password=b-secret]",
    ]  # fmt: skip


@pytest.mark.parametrize("user", [("al ice", "pw"), ("alice", 'p"w'), ("alice", "p,w]")])
def test_sasl_users_that_would_break_the_jaas_line_are_refused(user: tuple[str, str]) -> None:
    with pytest.raises(LocalKafkaError, match="letters, digits"):
        SaslListener(port=1, users=(user,))


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(kafka_bootstrap="127.0.0.1:19092"), ("127.0.0.1", 19092)),
        (Settings(kafka_bootstrap="kafka.internal:9092"), None),
        (
            Settings(
                kafka_bootstrap="127.0.0.1:19094",
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_username="u",
                kafka_password="p",
            ),
            None,
        ),
    ],
    ids=["local", "elsewhere", "secured"],
)
def test_demo_and_bench_start_the_local_broker_only_for_local_plaintext(
    settings: Settings, expected: tuple[str, int] | None
) -> None:
    assert local_address(settings) == expected


def test_server_properties_refuse_a_data_dir_with_a_comma() -> None:
    with pytest.raises(LocalKafkaError, match="comma"):
        render_server_properties(port=1, controller_port=2, data_dir=Path("/a,b"))


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("/plain/path", "/plain/path"),
        ("C:\\kafka", "C:\\\\kafka"),
        ("/tmp/caf\u00e9", "/tmp/caf\\u00e9"),
        ("/tmp/\U0001f600", "/tmp/\\ud83d\\ude00"),  # a surrogate pair, as Java strings hold it
        (" lead", "\\ lead"),
    ],
)
def test_property_values_are_escaped_for_latin1_properties_files(value: str, escaped: str) -> None:
    assert escape_property(value) == escaped


def test_pom_pins_kafka_and_the_logging_binding() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(render_pom())
    deps = {
        dep.findtext("m:artifactId", namespaces=ns): dep.findtext("m:version", namespaces=ns)
        for dep in root.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps[f"kafka_{SCALA_VERSION}"] == KAFKA_VERSION
    assert deps["reload4j"] == RELOAD4J_VERSION
    assert "slf4j-reload4j" in deps
    plugin_version = root.findtext("m:build/m:plugins/m:plugin/m:version", namespaces=ns)
    assert plugin_version, "the dependency plugin version is pinned for repeatable fetches"


def test_kafka_is_pinned_to_the_3_9_line() -> None:
    # 4.0 removed protocol versions aiokafka (Faust's client) still uses; see KAFKA_VERSION.
    assert KAFKA_VERSION.startswith("3.9.")


def test_cluster_id_is_22_base64url_characters_never_starting_with_a_dash() -> None:
    # 0xf8 encodes to "-" first; all zeros is Kafka's reserved zero id.
    draws: Iterator[bytes] = iter([b"\xf8" * 16, b"\x00" * 16, bytes(range(16))])
    cluster_id = new_cluster_id(lambda n: next(draws))
    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw"


def test_cluster_ids_differ_between_calls() -> None:
    assert new_cluster_id() != new_cluster_id()


def test_java_command_runs_the_main_class_from_the_jar_folder() -> None:
    paths = BrokerPaths(root=Path("/h/kafka"), jars=Path("/cache/libs"))
    command = java_command("/usr/bin/java", paths, "kafka.Kafka", "/h/kafka/server.properties")
    assert command[0] == "/usr/bin/java"
    assert command[command.index("-cp") + 1] == "/cache/libs/*"
    assert command[-2:] == ["kafka.Kafka", "/h/kafka/server.properties"]
    assert "-Dlog4j.configuration=file:///h/kafka/log4j.properties" in command
    assert "-Dkafka.logs.dir=/h/kafka/logs" in command
    assert any(option.startswith("-Xmx") for option in command)


def test_jars_default_under_home_and_can_be_shared() -> None:
    settings = Settings(home=Path("/h"))
    assert jars_dir(settings) == Path(f"/h/kafka/{KAFKA_VERSION}/libs")
    assert broker_paths(settings).data == Path("/h/kafka/data")
    shared = Settings.from_env({"COALMINE_HOME": "/h", "COALMINE_KAFKA_JARS": "/shared/libs"})
    assert jars_dir(shared) == Path("/shared/libs")
    assert broker_paths(shared).root == Path("/h/kafka")


@pytest.mark.parametrize(
    ("text", "pid"),
    [("1234\n", 1234), ("  77 ", 77), ("", None), ("abc", None), ("0", None), ("-5", None)],
)
def test_pid_file_text(text: str, pid: int | None) -> None:
    assert read_pid(text) == pid


def test_broker_cmdline_must_name_kafka_and_this_homes_properties() -> None:
    props = Path("/h/kafka/server.properties")
    ours = b"\0".join([b"java", b"-Xmx512m", b"-cp", b"/c/*", b"kafka.Kafka", str(props).encode()])
    assert is_broker_cmdline(ours + b"\0", props)
    assert not is_broker_cmdline(b"", props), "a zombie has an empty cmdline"
    assert not is_broker_cmdline(b"python\0-m\0pytest\0", props), "a reused pid"
    assert not is_broker_cmdline(ours, Path("/other/kafka/server.properties"))


@pytest.mark.parametrize(
    ("alive", "answering", "in_use", "action"),
    [
        (True, True, True, UpAction.ALREADY_RUNNING),
        (True, False, True, UpAction.WAIT_FOR_START),
        (True, False, False, UpAction.WAIT_FOR_START),
        (False, True, True, UpAction.PORT_TAKEN),
        (False, False, True, UpAction.PORT_TAKEN),
        (False, False, False, UpAction.START),
    ],
)
def test_up_decision(alive: bool, answering: bool, in_use: bool, action: UpAction) -> None:
    assert decide_up(broker_alive=alive, answering=answering, port_in_use=in_use) is action


def test_last_lines_keeps_the_end() -> None:
    assert last_lines("a\nb\nc\n\n", 2) == "b\nc"
    assert last_lines("", 5) == ""


def test_maven_failure_summary_keeps_the_error_and_drops_colours_and_advice() -> None:
    output = (
        "\x1b[0m[ERROR] Failed to execute goal on project local-kafka: Could not resolve "
        "dependencies: Could not find artifact org.apache.kafka:kafka_2.13:jar:0.0.9\n"
        "[ERROR] \n"
        "[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.\n"
        "\x1b[0m\x1b[0m"
    )
    summary = maven_failure_summary(output)
    assert summary.startswith("[ERROR] Failed to execute goal")
    assert "kafka_2.13:jar:0.0.9" in summary
    assert "re-run Maven" not in summary
    assert "\x1b" not in summary


def test_maven_failure_summary_falls_back_to_the_last_lines() -> None:
    assert maven_failure_summary("Downloading...\nkilled\n") == "Downloading...\nkilled"


def test_dev_up_refuses_settings_with_a_security_protocol(tmp_path: Path) -> None:
    secured = Settings(
        home=tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="u",
        kafka_password="p",
    )
    with pytest.raises(LocalKafkaError, match="speaks PLAINTEXT only"):
        localkafka.up(secured)
    assert not any(tmp_path.iterdir())
