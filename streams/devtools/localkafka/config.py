"""The local broker's configuration and decisions as pure functions: no files, no processes.

Everything :mod:`streams.devtools.localkafka` writes (server.properties, log4j.properties, the pom)
and every choice it makes (is this our broker? start, wait, or refuse?) is decided here, so
unit tests drive it directly.
"""

from __future__ import annotations

import base64
import enum
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LocalKafkaError
from streams.settings import Settings

# 3.9 is the last line that still speaks the old protocol versions Faust's aiokafka client
# uses; Kafka 4.0 removed them (KIP-896). confluent-kafka works with both.
KAFKA_VERSION = "3.9.2"
SCALA_VERSION = "2.13"
# Kafka 3.9 logs through the log4j 1.x API; its own distribution ships reload4j.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
DEFAULT_PORT = 9092
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class BrokerPaths:
    """Where one local broker keeps its jars, configuration, data, logs and pid."""

    root: Path
    jars: Path

    @property
    def server_properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.root / "log4j.properties"

    @property
    def cluster_id(self) -> Path:
        return self.root / "cluster.id"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def jvm_output(self) -> Path:
        return self.root / "broker.out"

    @property
    def pid(self) -> Path:
        return self.root / "broker.pid"


def broker_paths(settings: Settings) -> BrokerPaths:
    # Absolute, because the paths end up in the broker's command line and configuration.
    root = settings.home.absolute() / "kafka"
    jars = settings.kafka_jars_dir or root / KAFKA_VERSION / "libs"
    return BrokerPaths(root=root, jars=jars.absolute())


def jars_dir(settings: Settings) -> Path:
    """Where :func:`fetch_jars` caches the jars for these settings."""
    return broker_paths(settings).jars


def parse_local_bootstrap(bootstrap: str) -> tuple[str, int]:
    """The loopback ``(host, port)`` the local broker listens on, from ``COALMINE_KAFKA_BOOTSTRAP``.

    The broker always binds 127.0.0.1 (``localhost`` means the same here), because anything
    listening binds to loopback unless configured otherwise, and this broker has no security.
    """
    addresses = [part.strip() for part in bootstrap.split(",") if part.strip()]
    if len(addresses) != 1:
        raise LocalKafkaError(
            f"the local broker listens on one address; COALMINE_KAFKA_BOOTSTRAP is {bootstrap!r}"
        )
    host, sep, port_text = addresses[0].rpartition(":")
    if not sep:
        host, port_text = addresses[0], str(DEFAULT_PORT)
    if host not in LOOPBACK_HOSTS:
        raise LocalKafkaError(
            f"the local broker only listens on 127.0.0.1, not {host!r}; set "
            f"COALMINE_KAFKA_BOOTSTRAP=127.0.0.1:<port>, or use your own broker without `dev up`"
        )
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise LocalKafkaError(f"COALMINE_KAFKA_BOOTSTRAP has no valid port: {bootstrap!r}")
    return "127.0.0.1", int(port_text)


def local_address(settings: Settings) -> tuple[str, int] | None:
    """Where the local broker would serve ``settings``, or None when they point at another
    cluster: an address off this machine, or a security protocol (the local broker's default
    listener is plaintext). The demo and the benchmark start the local broker only for these."""
    if settings.kafka_security_protocol != "PLAINTEXT":
        return None
    try:
        return parse_local_bootstrap(settings.kafka_bootstrap)
    except LocalKafkaError:
        return None


def escape_property(value: str) -> str:
    """``value`` as a java.util.Properties value (the file is read as ISO-8859-1)."""
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    return "\\" + "".join(out) if value.startswith(" ") else "".join(out)


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_JAAS_SAFE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SaslListener:
    """A second listener of the local broker, SASL_PLAINTEXT on 127.0.0.1:``port``, where each
    of ``users`` (name, password) may log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.

    For tests of the clients' security settings: ``coalmine dev up`` never opens one. SCRAM
    users are stored when the data folder is formatted, so they exist only on a fresh folder.
    """

    port: int
    users: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        # The names and passwords are written into a JAAS line and a tool's argument unquoted.
        for name, password in self.users:
            if not (_JAAS_SAFE.fullmatch(name) and _JAAS_SAFE.fullmatch(password)):
                raise LocalKafkaError("SASL test users: letters, digits, '.', '_', '-' only")

    def properties(self) -> dict[str, str]:
        """What server.properties adds for this listener (listeners are extended by
        :func:`render_server_properties`)."""
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.users)
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            **{
                f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config": scram
                for mechanism in SCRAM_MECHANISMS
            },
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        return [
            argument
            for name, password in self.users
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


def render_server_properties(
    *, port: int, controller_port: int, data_dir: Path, sasl: SaslListener | None = None
) -> str:
    """KRaft configuration of a one-node cluster that is both broker and controller; with
    ``sasl``, also a SASL_PLAINTEXT listener."""
    if "," in str(data_dir):
        # log.dirs is a comma-separated list; a comma would silently split the path.
        raise LocalKafkaError(f"the Kafka data folder may not contain a comma: {data_dir}")
    advertised = f"PLAINTEXT://127.0.0.1:{port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if sasl is not None:
        advertised += f",SASL_PLAINTEXT://127.0.0.1:{sasl.port}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"{advertised},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        **(sasl.properties() if sasl is not None else {}),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One node: internal topics cannot have more replicas, and fewer partitions than the
        # default 50 make the first consumer group and transaction start in well under a second.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        # Nobody else is going to join: rebalance at once instead of waiting 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # Convenient for the SDK and ad-hoc tools; the worker creates its topics explicitly
        # with the partition count from the settings.
        "auto.create.topics.enable": "true",
    }
    lines = ["# Written by `coalmine dev up` on every start; edits are overwritten."]
    lines += [f"{key}={escape_property(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


LOG4J_PROPERTIES = """\
# Written by `coalmine dev up`. kafka.logs.dir is set on the java command line.
log4j.rootLogger=INFO, server
log4j.appender.server=org.apache.log4j.RollingFileAppender
log4j.appender.server.File=${kafka.logs.dir}/server.log
log4j.appender.server.MaxFileSize=10MB
log4j.appender.server.MaxBackupIndex=3
log4j.appender.server.layout=org.apache.log4j.PatternLayout
log4j.appender.server.layout.ConversionPattern=[%d] %p %m (%c)%n
# Per-request and state-change chatter helps debug Kafka itself, not this pipeline.
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.zookeeper=WARN
"""


def render_pom(version: str = KAFKA_VERSION) -> str:
    """A pom whose runtime dependencies are exactly the broker's classpath."""
    dependencies = (
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", version),
        ("org.slf4j", "slf4j-reload4j", SLF4J_VERSION),
        ("ch.qos.reload4j", "reload4j", RELOAD4J_VERSION),
    )
    rendered = "".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n"
        for g, a, v in dependencies
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- Written by `coalmine dev fetch`: the jars next to this file came from it. -->\n"
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>dev.coalmine</groupId>\n"
        "  <artifactId>local-kafka</artifactId>\n"
        f"  <version>{version}</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencies>\n{rendered}  </dependencies>\n"
        "  <build><plugins><plugin>\n"
        "    <groupId>org.apache.maven.plugins</groupId>\n"
        "    <artifactId>maven-dependency-plugin</artifactId>\n"
        f"    <version>{DEPENDENCY_PLUGIN_VERSION}</version>\n"
        "  </plugin></plugins></build>\n"
        "</project>\n"
    )


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A KRaft cluster id like ``kafka-storage random-uuid`` makes: 16 bytes, base64url.

    Like Kafka, never one starting with ``-``: the tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-") and cluster_id != "A" * 22:
            return cluster_id


def java_command(java: str, paths: BrokerPaths, main_class: str, *args: str) -> list[str]:
    """``java`` running ``main_class`` from the jars, logging as log4j.properties says."""
    return [
        java,
        *JVM_OPTIONS,
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j.configuration={paths.log4j_properties.as_uri()}",
        "-cp",
        f"{paths.jars}{os.sep}*",  # java expands the wildcard itself; no shell involved
        main_class,
        *args,
    ]


def read_pid(text: str) -> int | None:
    """The pid in a pid file's text, or None when it holds no positive number."""
    stripped = text.strip()
    return (
        int(stripped) if stripped.isascii() and stripped.isdigit() and int(stripped) > 0 else None
    )


def is_broker_cmdline(cmdline: bytes, server_properties: Path) -> bool:
    """Whether ``/proc/<pid>/cmdline`` is our broker's (and not a reused pid or a zombie)."""
    argv = cmdline.decode(errors="replace").split("\0")
    return "kafka.Kafka" in argv and str(server_properties) in argv


class UpAction(enum.Enum):
    START = "start"
    ALREADY_RUNNING = "already running"
    WAIT_FOR_START = "wait for start"
    PORT_TAKEN = "port taken"


def decide_up(*, broker_alive: bool, answering: bool, port_in_use: bool) -> UpAction:
    """What ``up`` does, given our broker's process, its address and that address's port."""
    if broker_alive:
        # Alive but silent: still starting (recovering a large log, say), or hung; waiting
        # with a deadline tells which.
        return UpAction.ALREADY_RUNNING if answering else UpAction.WAIT_FOR_START
    if port_in_use or answering:
        return UpAction.PORT_TAKEN
    return UpAction.START


def last_lines(text: str, count: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def maven_failure_summary(output: str) -> str:
    """The part of Maven's output that says what failed, without colours or the generic advice
    (``re-run with -e``, help links) Maven appends after a blank ``[ERROR]`` line."""
    lines = _ANSI_ESCAPE.sub("", output).splitlines()
    errors: list[str] = []
    for line in lines:
        if line.startswith("[ERROR]"):
            if not line[len("[ERROR]") :].strip():
                break
            errors.append(line)
    return "\n".join(errors) if errors else last_lines("\n".join(lines), 15)
