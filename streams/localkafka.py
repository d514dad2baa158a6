"""The local single-node Kafka broker (KRaft, combined broker + controller) for development.

It runs the official Apache Kafka jars, which Maven resolves from Maven Central on first use;
no Docker and no download from any other host. ``coalmine dev up|down|status|fetch`` and the
integration test suite (through :class:`LocalKafka`) use the same functions.

Files, all under ``settings.home / "kafka"`` unless noted::

    <version>/libs/      the jars (or COALMINE_KAFKA_JARS), with the pom.xml Maven resolved
                         and a ``.complete`` marker written only after a full download
    server.properties    rendered on every start from the settings
    log4j.properties     where the broker logs (logs/server.log, rotated)
    cluster.id           the KRaft cluster id, kept so a re-format is never needed
    data/                the broker's log.dirs (topics, offsets, KRaft metadata)
    logs/server.log      the broker's log
    broker.out           the JVM's stdout/stderr, for failures before logging starts
    broker.pid           the pid of the running broker
"""

from __future__ import annotations

import base64
import enum
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import LocalKafkaError, MissingToolError
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
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MAVEN_TIMEOUT_S = 900.0
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
JAVA_HINT = (
    "Java 17+ is needed to run the local Kafka broker: apt-get install openjdk-17-jre-headless"
)
MAVEN_HINT = "Maven is needed to fetch the Kafka jars from Maven Central: apt-get install maven"
COMPLETE_MARKER = ".complete"


# --- pure logic -----------------------------------------------------------------------------


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
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LocalKafkaError(f"COALMINE_KAFKA_BOOTSTRAP has no valid port: {bootstrap!r}")
    return "127.0.0.1", int(port_text)


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


def render_server_properties(*, port: int, controller_port: int, data_dir: Path) -> str:
    """KRaft configuration of a one-node cluster that is both broker and controller."""
    if "," in str(data_dir):
        # log.dirs is a comma-separated list; a comma would silently split the path.
        raise LocalKafkaError(f"the Kafka data folder may not contain a comma: {data_dir}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
    return int(stripped) if stripped.isdigit() and int(stripped) > 0 else None


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
        # Alive but silent: most likely another `up` started it a moment ago.
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


# --- processes, files and the network ---------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(hint)
    return path


def _is_complete(libs: Path) -> bool:
    marker = libs / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == KAFKA_VERSION


def fetch_jars(settings: Settings) -> Path:
    """The folder of the broker's jars, resolved from Maven Central by Maven on first use.

    Jars land in a staging folder that is renamed into place only after Maven succeeded, so an
    interrupted download is never mistaken for a complete one.
    """
    libs = jars_dir(settings)
    if _is_complete(libs):
        return libs
    mvn = _require_tool("mvn", MAVEN_HINT)
    _require_tool("java", JAVA_HINT)
    _say(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central (first run only)...")
    started = time.monotonic()
    staging = libs.with_name(f"{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _run_maven(mvn, staging)
        (staging / COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
        if libs.exists() and not _is_complete(libs):
            shutil.rmtree(libs)  # left by a version of this code without the staging step
        try:
            staging.rename(libs)
        except OSError:
            if not _is_complete(libs):  # a concurrent fetch finishing first is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = list(libs.glob("*.jar"))
    size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
    _say(
        f"Kafka {KAFKA_VERSION} jars ready: {len(jars)} jars, {size_mb:.0f} MB in {libs} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return libs


def _run_maven(mvn: str, out_dir: Path) -> None:
    pom = out_dir / "pom.xml"
    pom.write_text(render_pom())
    command = [
        mvn,
        "--batch-mode",
        "--quiet",
        "-Dstyle.color=never",
        "--file",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}",
        "-DincludeScope=runtime",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise LocalKafkaError(
            f"Maven did not finish resolving the Kafka jars within {MAVEN_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        summary = maven_failure_summary(done.stdout + done.stderr)
        raise LocalKafkaError(f"Maven could not resolve the Kafka jars:\n{summary}")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the broker sets, so a connection in TIME_WAIT does not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
        return False


def _answers(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """Whether a Kafka broker at host:port returns metadata naming at least one broker."""
    try:
        # A plain connect first: the Kafka client would log every refused connection.
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": f"{host}:{port}", "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _alive(pid: int) -> bool:
    try:
        # Reaps the broker when this very process started it (tests), so it is not a zombie.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent (init, after `dev up` exited) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_broker_pid(paths: BrokerPaths) -> int | None:
    """The pid from the pid file if that process is alive and is this home's broker."""
    try:
        pid = read_pid(paths.pid.read_text())
    except FileNotFoundError:
        return None
    if pid is None or not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid  # no /proc (not Linux): trust the pid file
    except OSError:
        return None
    return pid if is_broker_cmdline(cmdline, paths.server_properties) else None


def _stop(pid: int, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True when the broker shut down cleanly."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return sig == signal.SIGTERM
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return sig == signal.SIGTERM
            time.sleep(0.1)
    raise LocalKafkaError(f"the local Kafka broker (pid {pid}) did not exit even after SIGKILL")


def _log_tail(paths: BrokerPaths) -> str:
    parts = []
    for path in (paths.jvm_output, paths.server_log):
        if path.is_file() and (text := path.read_text(errors="replace").strip()):
            parts.append(f"--- last lines of {path}:\n{last_lines(text)}")
    return "\n".join(parts) or "(the broker wrote no log)"


def _format_storage(java: str, paths: BrokerPaths) -> None:
    """Format the data folder for KRaft once; the cluster id is kept for later formats."""
    if (paths.data / "meta.properties").exists():
        return
    if paths.cluster_id.is_file():
        cluster_id = paths.cluster_id.read_text().strip()
    else:
        cluster_id = new_cluster_id()
        paths.cluster_id.write_text(cluster_id + "\n")
    command = java_command(
        java, paths, "kafka.tools.StorageTool", "format", "--ignore-formatted",
        "--cluster-id", cluster_id, "--config", str(paths.server_properties),
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        output = last_lines(done.stdout + done.stderr)
        raise LocalKafkaError(f"could not format the Kafka data folder {paths.data}:\n{output}")


def _spawn_broker(java: str, paths: BrokerPaths) -> int:
    """Start the broker in its own session, so it outlives `coalmine dev up` and Ctrl-C."""
    command = java_command(java, paths, "kafka.Kafka", str(paths.server_properties))
    out = os.open(paths.jvm_output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # posix_spawn rather than Popen: nothing here waits on the child, and a Popen object
        # of a still-running process warns when it is garbage collected.
        return os.posix_spawn(
            java,
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(out)


def _wait_until_ready(pid: int, paths: BrokerPaths, host: str, port: int) -> float:
    """Seconds until the broker answered; raises if it died or stayed silent too long."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if not _alive(pid):
            raise LocalKafkaError(f"the local Kafka broker exited during start\n{_log_tail(paths)}")
        if _answers(host, port, timeout_s=2.0):
            return time.monotonic() - started
        time.sleep(0.25)
    raise LocalKafkaError(
        f"the local Kafka broker did not answer on {host}:{port} within {START_TIMEOUT_S:.0f} s"
        f"\n{_log_tail(paths)}"
    )


# --- the commands -----------------------------------------------------------------------------


def up(settings: Settings) -> None:
    """Start the local broker unless it already runs, and return once it answers requests."""
    host, port = parse_local_bootstrap(settings.kafka_bootstrap)
    paths = broker_paths(settings)
    pid = _running_broker_pid(paths)
    answering = _answers(host, port)
    action = decide_up(
        broker_alive=pid is not None,
        answering=answering,
        port_in_use=pid is None and _port_in_use(host, port),
    )
    if action is UpAction.ALREADY_RUNNING:
        _say(f"local Kafka is already running on {host}:{port} (pid {pid})")
        return
    if action is UpAction.PORT_TAKEN:
        who = "a Kafka broker this home did not start" if answering else "another program"
        raise LocalKafkaError(
            f"{host}:{port} is already in use by {who}; stop it, or pick another port with "
            f"COALMINE_KAFKA_BOOTSTRAP=127.0.0.1:<port>"
        )
    if pid is not None:  # UpAction.WAIT_FOR_START
        _say(f"local Kafka is starting (pid {pid}); waiting for it to answer...")
        _wait_until_ready(pid, paths, host, port)
        _say(f"local Kafka is ready on {host}:{port} (pid {pid})")
        return
    _start(settings, paths, host, port)


def _start(settings: Settings, paths: BrokerPaths, host: str, port: int) -> None:
    java = _require_tool("java", JAVA_HINT)
    fetch_jars(settings)
    paths.logs.mkdir(parents=True, exist_ok=True)
    properties = render_server_properties(
        port=port, controller_port=free_loopback_port(), data_dir=paths.data
    )
    paths.server_properties.write_text(properties)
    paths.log4j_properties.write_text(LOG4J_PROPERTIES)
    _format_storage(java, paths)
    _say(f"starting local Kafka {KAFKA_VERSION} on {host}:{port}...")
    pid = _spawn_broker(java, paths)
    paths.pid.write_text(f"{pid}\n")
    try:
        elapsed = _wait_until_ready(pid, paths, host, port)
    except BaseException:
        # Never leave a half-started broker behind, not even on Ctrl-C.
        _stop(pid, timeout_s=5.0)
        paths.pid.unlink(missing_ok=True)
        raise
    _say(
        f"local Kafka {KAFKA_VERSION} is ready on {host}:{port} "
        f"(pid {pid}, {elapsed:.1f} s; log {paths.server_log})"
    )


def down(settings: Settings) -> None:
    """Stop the local broker: SIGTERM, and SIGKILL if it has not exited after 30 s."""
    paths = broker_paths(settings)
    pid = _running_broker_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)  # a stale file from a crash or a reboot
        _say("local Kafka is not running")
        return
    _say(f"stopping local Kafka (pid {pid})...")
    clean = _stop(pid, STOP_TIMEOUT_S)
    paths.pid.unlink(missing_ok=True)
    _say("local Kafka stopped" if clean else f"local Kafka killed after {STOP_TIMEOUT_S:.0f} s")


def status(settings: Settings) -> bool:
    """Print whether the local broker runs and answers; True when its address answers."""
    host, port = parse_local_bootstrap(settings.kafka_bootstrap)
    paths = broker_paths(settings)
    pid = _running_broker_pid(paths)
    answering = _answers(host, port)
    process = f"running, pid {pid}" if pid is not None else "not running"
    if pid is None and answering:
        process += " (but a broker this home did not start answers on its address)"
    _say(f"local Kafka {KAFKA_VERSION} (KRaft, single node): {process}")
    _say(f"  address: {host}:{port}, {'answering' if answering else 'not answering'}")
    _say(f"  data:    {paths.data}")
    _say(f"  log:     {paths.server_log}")
    return answering


class LocalKafka:
    """A broker owned by one block of code, started and stopped like ``dev up`` / ``dev down``.

    ``with LocalKafka(settings) as bootstrap: ...`` returns once the broker answers, and stops it
    when the block ends, also when it raises. A failed start stops what it began before raising.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> str:
        up(self.settings)
        return self.settings.kafka_bootstrap

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        down(self.settings)
