"""The local broker's processes, ports and files: spawn, probe, stop. Thin, no decisions."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.devtools.localkafka.config import (
    BrokerPaths,
    is_broker_cmdline,
    java_command,
    last_lines,
    new_cluster_id,
    read_pid,
)
from streams.errors import LocalKafkaError, MissingToolError

START_TIMEOUT_S = 60.0
JAVA_HINT = (
    "Java 17+ is needed to run the local Kafka broker: apt-get install openjdk-17-jre-headless"
)
MAVEN_HINT = "Maven is needed to fetch the Kafka jars from Maven Central: apt-get install maven"


def say(message: str) -> None:
    print(message, flush=True)


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(hint)
    return path


@contextmanager
def locked(paths: BrokerPaths) -> Iterator[None]:
    """Hold this home's broker lock, so two `up`s (or an `up` and a `down`) take turns."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with (paths.root / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def free_loopback_port(other_than: Collection[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and none of ``other_than``
    (ports chosen for other listeners but not bound yet, which the kernel may hand out
    again)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in other_than:
            return port


def port_in_use(host: str, port: int) -> bool:
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


def answers(host: str, port: int, timeout_s: float = 3.0) -> bool:
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


def alive(pid: int) -> bool:
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


def running_broker_pid(paths: BrokerPaths) -> int | None:
    """The pid from the pid file if that process is alive and is this home's broker."""
    try:
        pid = read_pid(paths.pid.read_text())
    except FileNotFoundError:
        return None
    if pid is None or not alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid  # no /proc (not Linux): trust the pid file
    except OSError:
        return None
    return pid if is_broker_cmdline(cmdline, paths.server_properties) else None


def stop(pid: int, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True when the broker shut down cleanly."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return sig == signal.SIGTERM
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not alive(pid):
                return sig == signal.SIGTERM
            time.sleep(0.1)
    raise LocalKafkaError(f"the local Kafka broker (pid {pid}) did not exit even after SIGKILL")


def log_tail(paths: BrokerPaths) -> str:
    parts = []
    for path in (paths.jvm_output, paths.server_log):
        if path.is_file() and (text := path.read_text(errors="replace").strip()):
            parts.append(f"--- last lines of {path}:\n{last_lines(text)}")
    return "\n".join(parts) or "(the broker wrote no log)"


def format_storage(java: str, paths: BrokerPaths, extra_arguments: Sequence[str] = ()) -> None:
    """Format the data folder for KRaft once; the cluster id is kept for later formats.
    ``extra_arguments`` go to the format command (SCRAM users)."""
    if (paths.data / "meta.properties").exists():
        return
    if paths.cluster_id.is_file():
        cluster_id = paths.cluster_id.read_text().strip()
    else:
        cluster_id = new_cluster_id()
        paths.cluster_id.write_text(cluster_id + "\n")
    command = java_command(
        java, paths, "kafka.tools.StorageTool", "format", "--ignore-formatted",
        "--cluster-id", cluster_id, "--config", str(paths.server_properties), *extra_arguments,
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        output = last_lines(done.stdout + done.stderr)
        raise LocalKafkaError(f"could not format the Kafka data folder {paths.data}:\n{output}")


def spawn_broker(java: str, paths: BrokerPaths, *, detach: bool) -> int:
    """Start the broker; ``detach`` puts it in its own session, so it outlives `dev up` and
    Ctrl-C. Undetached (tests), it shares the caller's process group and dies with it."""
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
            setsid=detach,
        )
    finally:
        os.close(out)


def wait_until_ready(pid: int, paths: BrokerPaths, host: str, port: int) -> float:
    """Seconds until the broker answered; raises if it died or stayed silent too long."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if not alive(pid):
            raise LocalKafkaError(f"the local Kafka broker exited during start\n{log_tail(paths)}")
        if answers(host, port, timeout_s=2.0):
            return time.monotonic() - started
        time.sleep(0.25)
    raise LocalKafkaError(
        f"the local Kafka broker did not answer on {host}:{port} within {START_TIMEOUT_S:.0f} s"
        f"\n{log_tail(paths)}"
    )
