"""The broker's jars: resolved from Maven Central by Maven once, then cached."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from streams.devtools.localkafka.config import (
    COMPLETE_MARKER,
    KAFKA_VERSION,
    jars_dir,
    maven_failure_summary,
    render_pom,
)
from streams.devtools.localkafka.process import JAVA_HINT, MAVEN_HINT, require_tool, say
from streams.errors import LocalKafkaError
from streams.settings import Settings

MAVEN_TIMEOUT_S = 900.0


def is_complete(libs: Path) -> bool:
    marker = libs / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == KAFKA_VERSION


def fetch_jars(settings: Settings) -> Path:
    """The folder of the broker's jars, resolved from Maven Central by Maven on first use.

    Jars land in a staging folder that is renamed into place only after Maven succeeded, so an
    interrupted download is never mistaken for a complete one.
    """
    libs = jars_dir(settings)
    if is_complete(libs):
        return libs
    mvn = require_tool("mvn", MAVEN_HINT)
    require_tool("java", JAVA_HINT)
    say(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central (first run only)...")
    started = time.monotonic()
    staging = libs.with_name(f"{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        run_maven(mvn, staging)
        (staging / COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
        if libs.exists() and not is_complete(libs):
            shutil.rmtree(libs)  # an older, unfinished download
        try:
            staging.rename(libs)
        except OSError:
            if not is_complete(libs):  # a concurrent fetch finishing first is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = list(libs.glob("*.jar"))
    size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
    say(
        f"Kafka {KAFKA_VERSION} jars ready: {len(jars)} jars, {size_mb:.0f} MB in {libs} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return libs


def run_maven(mvn: str, out_dir: Path) -> None:
    """Copy the runtime dependencies of :func:`render_pom`'s pom into ``out_dir``."""
    pom = out_dir / "pom.xml"  # kept next to the jars: a record of where they came from
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
