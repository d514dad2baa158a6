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
    broker.pid, lock     the running broker's pid; the lock `up` and `down` take turns on

Modules: :mod:`.config` (pure: rendered files and decisions), :mod:`.jars` (Maven),
:mod:`.process` (spawning, probing and stopping).
"""

from __future__ import annotations

import atexit
from types import TracebackType

from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import (
    COMPLETE_MARKER,
    KAFKA_VERSION,
    LOG4J_PROPERTIES,
    BrokerPaths,
    SaslListener,
    UpAction,
    broker_paths,
    decide_up,
    jars_dir,
    parse_local_bootstrap,
    render_server_properties,
)
from streams.devtools.localkafka.jars import fetch_jars
from streams.devtools.localkafka.process import free_loopback_port, say
from streams.errors import LocalKafkaError
from streams.settings import Settings

__all__ = [
    "COMPLETE_MARKER",
    "KAFKA_VERSION",
    "LocalKafka",
    "SaslListener",
    "broker_paths",
    "down",
    "fetch_jars",
    "free_loopback_port",
    "jars_dir",
    "status",
    "up",
]

STOP_TIMEOUT_S = 30.0


def up(settings: Settings, *, detach: bool = True, sasl: SaslListener | None = None) -> None:
    """Start the local broker unless it already runs, and return once it answers requests.

    ``detach=False`` keeps the broker in the caller's process group (see :class:`LocalKafka`);
    ``sasl`` opens a second, SASL listener when this call starts the broker (tests).
    """
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise LocalKafkaError(
            "the local broker speaks PLAINTEXT only; unset COALMINE_KAFKA_SECURITY_PROTOCOL "
            f"(it is {settings.kafka_security_protocol}) to use it"
        )
    host, port = parse_local_bootstrap(settings.kafka_bootstrap)
    paths = broker_paths(settings)
    with process.locked(paths):
        pid = process.running_broker_pid(paths)
        answering = process.answers(host, port)
        action = decide_up(
            broker_alive=pid is not None,
            answering=answering,
            port_in_use=pid is None and process.port_in_use(host, port),
        )
        if action is UpAction.ALREADY_RUNNING:
            say(f"local Kafka is already running on {host}:{port} (pid {pid})")
        elif action is UpAction.PORT_TAKEN:
            who = "a Kafka broker this home did not start" if answering else "another program"
            raise LocalKafkaError(
                f"{host}:{port} is already in use by {who}; stop it, or pick another port with "
                f"COALMINE_KAFKA_BOOTSTRAP=127.0.0.1:<port>"
            )
        elif pid is not None:  # UpAction.WAIT_FOR_START, e.g. still loading a large log
            say(f"local Kafka is starting (pid {pid}); waiting for it to answer...")
            process.wait_until_ready(pid, paths, host, port)
            say(f"local Kafka is ready on {host}:{port} (pid {pid})")
        else:
            _start(settings, paths, host, port, detach=detach, sasl=sasl)


def _start(
    settings: Settings,
    paths: BrokerPaths,
    host: str,
    port: int,
    *,
    detach: bool,
    sasl: SaslListener | None,
) -> None:
    java = process.require_tool("java", process.JAVA_HINT)
    fetch_jars(settings)
    paths.logs.mkdir(parents=True, exist_ok=True)
    properties = render_server_properties(
        port=port,
        controller_port=free_loopback_port(other_than=(port, *([sasl.port] if sasl else []))),
        data_dir=paths.data,
        sasl=sasl,
    )
    paths.server_properties.write_text(properties)
    paths.log4j_properties.write_text(LOG4J_PROPERTIES)
    process.format_storage(java, paths, sasl.format_arguments() if sasl is not None else [])
    say(f"starting local Kafka {KAFKA_VERSION} on {host}:{port}...")
    pid = process.spawn_broker(java, paths, detach=detach)
    paths.pid.write_text(f"{pid}\n")
    try:
        elapsed = process.wait_until_ready(pid, paths, host, port)
    except BaseException:
        # Never leave a half-started broker behind, not even on Ctrl-C.
        process.stop(pid, timeout_s=5.0)
        paths.pid.unlink(missing_ok=True)
        raise
    say(
        f"local Kafka {KAFKA_VERSION} is ready on {host}:{port} "
        f"(pid {pid}, {elapsed:.1f} s; log {paths.server_log})"
    )


def down(settings: Settings) -> None:
    """Stop the local broker: SIGTERM, and SIGKILL if it has not exited after 30 s."""
    paths = broker_paths(settings)
    with process.locked(paths):
        pid = process.running_broker_pid(paths)
        if pid is None:
            paths.pid.unlink(missing_ok=True)  # a stale file from a crash or a reboot
            say("local Kafka is not running")
            return
        say(f"stopping local Kafka (pid {pid})...")
        clean = process.stop(pid, STOP_TIMEOUT_S)
        paths.pid.unlink(missing_ok=True)
    say("local Kafka stopped" if clean else f"local Kafka killed after {STOP_TIMEOUT_S:.0f} s")


def status(settings: Settings) -> bool:
    """Print whether the local broker runs and answers; True when its address answers."""
    host, port = parse_local_bootstrap(settings.kafka_bootstrap)
    paths = broker_paths(settings)
    pid = process.running_broker_pid(paths)
    answering = process.answers(host, port)
    state = f"running, pid {pid}" if pid is not None else "not running"
    if pid is None and answering:
        state += " (but a broker this home did not start answers on its address)"
    say(f"local Kafka {KAFKA_VERSION} (KRaft, single node): {state}")
    say(f"  address: {host}:{port}, {'answering' if answering else 'not answering'}")
    say(f"  data:    {paths.data}")
    say(f"  log:     {paths.server_log}")
    return answering


class LocalKafka:
    """A broker owned by one block of code, started and stopped like ``dev up`` / ``dev down``.

    ``with LocalKafka(settings) as bootstrap: ...`` returns once the broker answers and stops it
    when the block ends, also when it raises; a failed start stops what it began. Unlike
    ``dev up`` the broker stays in the caller's process group, so a Ctrl-C or a CI job killing
    that group takes it down too, and an exit without ``__exit__`` still stops it (atexit).
    """

    def __init__(self, settings: Settings, sasl: SaslListener | None = None) -> None:
        self.settings = settings
        self.sasl = sasl

    def __enter__(self) -> str:
        atexit.register(self._stop_at_exit)
        try:
            up(self.settings, detach=False, sasl=self.sasl)
        except BaseException:
            atexit.unregister(self._stop_at_exit)
            raise
        return self.settings.kafka_bootstrap

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        atexit.unregister(self._stop_at_exit)
        down(self.settings)

    def _stop_at_exit(self) -> None:
        down(self.settings)
