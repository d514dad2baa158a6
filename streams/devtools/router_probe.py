"""A process running routers and answering questions about them, one JSON line per command on
stdin, one JSON line per answer on stdout: what the router benchmark and the integration tests
use to see routers in other processes.

``python -m streams.devtools.router_probe AGENT [AGENT ...] --routers N`` (settings from
``COALMINE_*``) starts N routers, each following every AGENT, waits until they are ready and
prints ``{"ready": [...]}``. Commands (``agent`` defaults to the first AGENT):

* ``{"op": "await", "generation": G, "timeout": T, "agent": A}`` → ``{"seen": [t, ...]}``: per
  router, the wall-clock time (``time.time()``) its state for A first reached generation G or
  later, or null if that did not happen within T seconds (asked later, the time it happened).
* ``{"op": "route", "keys": N, "default": V}`` → ``{"canary": [i, ...], "versions": {...},
  "generations": [...], "bundles": n, "agree": bool}``: routes of keys ``user-0`` ..
  ``user-{N-1}`` by the first router (the indices of those on the canary, requests per version,
  generations seen, how many came with a bundle), and whether every router answered alike.
* ``{"op": "stats"}`` → the first router's :class:`~streams.sdk.router.RouterStats`.

End of input closes the routers and exits. :class:`RouterProbe` starts and drives one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

from streams.errors import CoalmineError
from streams.sdk.closing import ClosedOnExit
from streams.sdk.router import Route, Router
from streams.sdk.settings import SdkSettings


class WatchedRouter:
    """A router and when its state for each of its agents first reached each generation
    (also used in-process, by the demo and the incident benchmark, for the router their
    traffic goes through)."""

    def __init__(self, settings: SdkSettings, agents: list[str], name: str) -> None:
        self.agent = agents[0]
        self.agents = agents
        self.seen: dict[str, dict[int, float]] = {agent: {} for agent in agents}
        self.changed = threading.Condition()
        self.router = Router(settings, agents=agents, name=name)
        self.router.add_listener(self._on_change)

    def _on_change(self) -> None:
        now = time.time()
        with self.changed:
            for agent in self.agents:
                state = self.router.deployment(agent)
                if state is not None:
                    self.seen[agent].setdefault(state.generation, now)
            self.changed.notify_all()

    def reached(self, agent: str, generation: int, timeout: float) -> float | None:
        """When (``time.time()``) the state of ``agent`` first had ``generation`` or a later
        one, waiting up to ``timeout`` for it; None if it has not."""

        def first() -> float | None:
            times = [t for g, t in self.seen[agent].items() if g >= generation]
            return min(times) if times else None

        with self.changed:
            self.changed.wait_for(lambda: first() is not None, timeout)
            return first()


def _route_keys(routers: list[WatchedRouter], keys: int, default: str) -> dict[str, Any]:
    agent = routers[0].agent
    routes: list[Route] = [
        routers[0].router.route(agent, f"user-{i}", default) for i in range(keys)
    ]
    agree = all(
        [w.router.route(agent, f"user-{i}", default) for i in range(keys)] == routes
        for w in routers[1:]
    )
    return {
        "canary": [i for i, r in enumerate(routes) if r.canary],
        "versions": Counter(r.version for r in routes),
        "generations": sorted({r.generation for r in routes if r.generation is not None}),
        "bundles": sum(r.bundle is not None for r in routes),
        "agree": agree,
    }


def _answer(routers: list[WatchedRouter], command: dict[str, Any]) -> dict[str, Any]:
    op = command.get("op")
    if op == "await":
        generation, timeout = int(command["generation"]), float(command["timeout"])
        agent = str(command.get("agent", routers[0].agent))
        if agent not in routers[0].seen:
            return {"error": f"not following {agent!r}"}
        return {"seen": [w.reached(agent, generation, timeout) for w in routers]}
    if op == "route":
        return _route_keys(routers, int(command["keys"]), str(command["default"]))
    if op == "stats":
        return dataclasses.asdict(routers[0].router.stats)
    return {"error": f"unknown op {op!r}"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="router_probe")
    parser.add_argument("agents", nargs="+", metavar="agent")
    parser.add_argument("--routers", type=int, default=1)
    args = parser.parse_args()
    settings = SdkSettings.from_env()
    routers = [
        WatchedRouter(settings, args.agents, f"probe-router-{n}") for n in range(args.routers)
    ]
    try:
        ready = [w.router.wait_ready() for w in routers]
        print(json.dumps({"ready": ready}), flush=True)
        for line in sys.stdin:
            print(json.dumps(_answer(routers, json.loads(line))), flush=True)
    finally:
        for w in routers:
            w.router.close()


class RouterProbe(ClosedOnExit):
    """A probe process with ``routers`` routers following ``agents``, on ``settings``'
    cluster."""

    def __init__(self, settings: SdkSettings, *agents: str, routers: int = 1) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.devtools.router_probe",
                *agents,
                "--routers",
                str(routers),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **settings.as_env()},
        )
        self.ready: list[bool] = self._read()["ready"]

    def ask(self, **command: Any) -> dict[str, Any]:
        stdin = self._pipe(self._process.stdin)
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _read(self) -> dict[str, Any]:
        line = self._pipe(self._process.stdout).readline()
        if not line:
            raise CoalmineError(f"the router probe exited (code {self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    @staticmethod
    def _pipe(stream: IO[str] | None) -> IO[str]:
        assert stream is not None  # both pipes are requested in __init__
        return stream


if __name__ == "__main__":
    main()
