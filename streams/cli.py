"""The ``coalmine`` command line. Each subcommand is a thin adapter over a module's function."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from streams.alerts.cli import add_alerts_parser
from streams.cliargs import DURATION_S, RATE, float_in, floats_in, int_in, ints_in
from streams.errors import CoalmineError
from streams.settings import Range, Settings, SettingsError

Handler = Callable[[argparse.Namespace, Settings], int]
WORKER_EXTRA_MODULES = frozenset(
    {
        "faust",
        "mode",
        "aiokafka",
        "aiohttp",
        "uvloop",
        "clickhouse_connect",
        "chdb",
        "numpy",
        "scipy",
        "yaml",
    }
)
"""What the ``worker`` extra installs (pyproject.toml); a subcommand that imports one of these
on a base install, the SDK alone, asks for the extra instead of failing with a traceback."""
BENCH_EVENTS = Range(1, 10_000_000)
"""Events of the ingest benchmark's backlog; all of them are held in memory first."""
BENCH_COMMANDS = Range(1, 1_000_000)
SPANS_PER_MESSAGE = Range(1, 1000)
"""Spans per message of the ingest benchmark: up to the batch limit of ``schemas.framing``."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a command stops what it started (the demo's and the
    benchmark's workers and broker) before it exits."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread. The worker's
    Faust installs its own handler once it runs, which takes precedence."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dev_up(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import localkafka

    localkafka.up(settings)
    return 0


def _dev_down(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import localkafka

    localkafka.down(settings)
    return 0


def _dev_status(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import localkafka

    return 0 if localkafka.status(settings) else 1


def _dev_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import localkafka

    localkafka.fetch_jars(settings)
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.storage import clickhouse

    applied = clickhouse.migrate(clickhouse.connect(settings))
    print(f"{len(applied)} migration(s) applied" if applied else "schema is up to date")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.runtime import worker

    return worker.run(settings)


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import generate

    return generate.run(settings, generate.TrafficPlan.from_args(args))


def _sql(args: argparse.Namespace, settings: Settings) -> int:
    from streams import sqlcli

    return sqlcli.run(settings, args.query, args.format)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools import demo

    return demo.run(
        settings, duration_s=args.duration, rate=args.rate, seed=args.seed, stay=args.stay
    )


def _bench_detector(args: argparse.Namespace, settings: Settings) -> int:
    from streams.detector.bench import cli as bench_cli

    exit_code: int = bench_cli.run(quick=args.quick, json_path=args.json, plot_path=args.plot)
    return exit_code


def _bench_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools.bench import ingest

    return ingest.run(
        settings,
        events=args.events,
        spans_per_message=args.spans_per_message,
        breakdown=args.breakdown,
    )


def _bench_router(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools.bench import router

    return router.run(
        settings,
        rollbacks=args.rollbacks,
        processes=args.processes,
        routers=args.routers,
        fetch_wait_ms=args.fetch_wait_ms,
    )


def _bench_approvals(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools.bench import approvals

    return approvals.run(settings, decisions=args.decisions, fetch_wait_ms=args.fetch_wait_ms)


OTLP_EXTRA_MODULES = frozenset({"aiohttp", "google", "opentelemetry"})
"""What the ``otlp`` extra installs (pyproject.toml) for ``coalmine otlp``."""


@contextmanager
def _needs_the_otlp_extra(command: str) -> Iterator[None]:
    """Around an import of :mod:`streams.otlp`: on a base install, say which extra to add."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in OTLP_EXTRA_MODULES:
            raise
        raise CoalmineError(
            f"`coalmine {command}` needs the otlp extra (there is no module {exc.name!r}): "
            "pip install 'coalmine[otlp]'"
        ) from None


def _otlp(args: argparse.Namespace, settings: Settings) -> int:
    with _needs_the_otlp_extra("otlp"):
        from streams.otlp import receiver
    return receiver.run(settings)


def _bench_otlp(args: argparse.Namespace, settings: Settings) -> int:
    with _needs_the_otlp_extra("bench otlp"):
        from streams.otlp import bench
    return bench.run(settings, spans=args.spans)


def _bench_incident(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools.bench import incident

    options = incident.Options(
        incidents=args.incidents,
        canary_error_rates=args.canary_error_rates,
        aa_incidents=args.aa_incidents,
        agents=args.agents,
        rate=args.rate,
        canary_share=args.canary_share,
        error_rate=args.error_rate,
        warmup_s=args.onset,
        timeout_s=args.timeout,
        aa_observe_s=args.aa_observe,
        processes=args.processes,
        routers=args.routers,
        judge_replications=args.judge_runs,
        seed=args.seed,
    )
    return incident.run(settings, options, args.json)


def _bench_controller(args: argparse.Namespace, settings: Settings) -> int:
    from streams.devtools.bench import controller

    return controller.run(settings, commands=args.commands)


def _add_bench_approvals(
    bench_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    apv = bench_commands.add_parser(
        "approvals", help="how soon a call waiting for approval resumes after the decision"
    )
    apv.add_argument(
        "--decisions",
        type=int_in(Range(1, 10_000)),
        default=200,
        help="decisions measured (default %(default)s)",
    )
    apv.add_argument(
        "--fetch-wait-ms",
        type=int_in(Range(1, 60_000)),
        help="the decision follower's fetch.wait.max.ms (default: "
        "COALMINE_SDK_ROUTER_FETCH_WAIT_MS)",
    )
    apv.set_defaults(handler=_bench_approvals)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coalmine",
        description="Coalmine: per-version quality, cost and error statistics for AI agents.",
        epilog="Settings come from COALMINE_* environment variables; see the README.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="the local single-node Kafka broker (KRaft)")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("up", _dev_up, "fetch the jars if needed and start the broker on 127.0.0.1"),
        ("down", _dev_down, "stop the broker"),
        ("status", _dev_status, "say whether the broker runs and answers (exit 1 if not)"),
        ("fetch", _dev_fetch, "resolve and cache the Kafka jars from Maven Central"),
    ):
        dev_commands.add_parser(name, help=text, description=text).set_defaults(handler=handler)

    commands.add_parser("migrate", help="apply the sql/ migrations (idempotent)").set_defaults(
        handler=_migrate
    )
    commands.add_parser(
        "worker", help="run the Faust worker with every stream processor"
    ).set_defaults(handler=_worker)

    commands.add_parser(
        "otlp", help="OTLP/HTTP receiver: OpenTelemetry GenAI spans in, trace events out"
    ).set_defaults(handler=_otlp)

    gen = commands.add_parser("generate", help="simulated agents producing traffic through the SDK")
    from streams.devtools.generate import add_traffic_arguments

    add_traffic_arguments(gen)
    gen.set_defaults(handler=_generate)

    sql = commands.add_parser("sql", help="run read-only SQL and print the result")
    sql.add_argument(
        "query", help='e.g. "SELECT agent, count() FROM coalmine.spans GROUP BY agent"'
    )
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(handler=_sql)

    from streams.approvals.cli import add_approvals_parser
    from streams.controller.commands import add_commands as add_deployment_commands
    from streams.versions.cli import add_versions_parser

    for add_parsers in (
        add_deployment_commands,
        add_versions_parser,
        add_alerts_parser,
        add_approvals_parser,
    ):
        add_parsers(commands)

    _add_demo(commands)

    bench = commands.add_parser("bench", help="benchmarks that print their figures")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    det = bench_commands.add_parser("detector", help="canary judges on simulated deployments")
    det.add_argument("--quick", action="store_true", help="a smaller run (under two minutes)")
    det.add_argument("--json", type=Path, help="write result rows as JSON here")
    det.add_argument("--plot", type=Path, help="write a PNG plot here")
    det.set_defaults(handler=_bench_detector)
    ing = bench_commands.add_parser("ingest", help="pipeline vs raw consume-insert loop")
    ing.add_argument(
        "--events",
        type=int_in(BENCH_EVENTS),
        default=100_000,
        help="events in the backlog (default %(default)s)",
    )
    ing.add_argument(
        "--spans-per-message",
        type=ints_in(SPANS_PER_MESSAGE),
        default=(1, 5, 50),
        metavar="N[,N...]",
        help="spans carried by each message, one comparison per size (default 1,5,50)",
    )
    ing.add_argument(
        "--breakdown",
        action="store_true",
        help="also run the worker with windows off and with rows discarded",
    )
    ing.set_defaults(handler=_bench_ingest)
    rtr = bench_commands.add_parser(
        "router", help="route() cost and how fast a rollback command reaches every router"
    )
    rtr.add_argument(
        "--rollbacks",
        type=int_in(Range(1, 10_000)),
        default=50,
        help="RollbackCommands measured (default %(default)s)",
    )
    rtr.add_argument(
        "--processes", type=int_in(Range(1, 64)), default=4, help="default %(default)s"
    )
    rtr.add_argument(
        "--routers",
        type=int_in(Range(1, 100)),
        default=5,
        help="routers per process (default %(default)s)",
    )
    rtr.add_argument(
        "--fetch-wait-ms",
        type=int_in(Range(1, 60_000)),
        help="the routers' fetch.wait.max.ms (default: COALMINE_SDK_ROUTER_FETCH_WAIT_MS)",
    )
    rtr.set_defaults(handler=_bench_router)
    _add_bench_approvals(bench_commands)
    otlp = bench_commands.add_parser("otlp", help="OTLP receiver vs the SDK publisher, spans/s")
    otlp.add_argument(
        "--spans",
        type=int_in(BENCH_EVENTS),
        default=100_000,
        help="spans sent each way (default %(default)s)",
    )
    otlp.set_defaults(handler=_bench_otlp)
    _add_bench_incident(bench_commands)
    ctl = bench_commands.add_parser("controller", help="commands the controller applies per second")
    ctl.add_argument(
        "--commands",
        type=int_in(BENCH_COMMANDS),
        default=2000,
        help="commands in the backlog (default %(default)s)",
    )
    ctl.set_defaults(handler=_bench_controller)
    return parser


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="the loop, end to end: a bad canary rolled back, a good one promoted"
    )
    demo.add_argument(
        "--duration",
        type=float_in(DURATION_S),
        default=120.0,
        help="at most this many seconds of traffic; the demo ends sooner once both canaries "
        "are decided (default %(default)s)",
    )
    demo.add_argument("--rate", type=float_in(RATE), default=200.0, help="requests per second")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--stay",
        action="store_true",
        help="after the story, keep the pipeline and the status page up until Ctrl-C",
    )
    demo.set_defaults(handler=_demo)


def _add_bench_incident(
    bench_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    inc = bench_commands.add_parser(
        "incident",
        help="onset of a bad canary -> RollbackCommand -> every router switched, on the real "
        "pipeline",
    )
    probability = float_in(Range(0, 1))
    inc.add_argument(
        "--incidents",
        type=int_in(Range(1, 1000)),
        default=10,
        help="incidents per regression scenario (default %(default)s)",
    )
    inc.add_argument(
        "--canary-error-rates",
        type=floats_in(Range(0, 1)),
        default=(0.02, 0.05),
        metavar="RATE[,RATE...]",
        help="one scenario per rate: the canary's error rate after the onset (default 0.02,0.05)",
    )
    inc.add_argument(
        "--aa-incidents",
        type=int_in(Range(0, 1000)),
        default=10,
        help="A/A incidents, the canary no different (0: none; default %(default)s)",
    )
    inc.add_argument(
        "--agents",
        type=int_in(Range(1, 50)),
        default=5,
        help="incidents at once, one per agent (default %(default)s)",
    )
    inc.add_argument(
        "--rate",
        type=float_in(RATE),
        default=100.0,
        help="requests/s per agent (default %(default)s)",
    )
    inc.add_argument("--canary-share", type=probability, default=0.1, help="default %(default)s")
    inc.add_argument(
        "--error-rate",
        type=probability,
        default=0.01,
        help="the error rate of stable, and of the canary before the onset (default %(default)s)",
    )
    inc.add_argument(
        "--onset",
        type=float_in(Range(0, 3600)),
        default=30.0,
        help="seconds of traffic before the onset (default %(default)s)",
    )
    inc.add_argument(
        "--timeout",
        type=float_in(Range(1, 86_400)),
        default=900.0,
        help="seconds after the onset before an incident counts as missed (default %(default)s)",
    )
    inc.add_argument(
        "--aa-observe",
        type=float_in(Range(1, 86_400)),
        default=300.0,
        help="seconds each A/A incident is watched (default %(default)s)",
    )
    inc.add_argument(
        "--processes",
        type=int_in(Range(1, 64)),
        default=2,
        help="router probe processes (default %(default)s)",
    )
    inc.add_argument(
        "--routers",
        type=int_in(Range(1, 100)),
        default=2,
        help="routers per probe process (default %(default)s)",
    )
    inc.add_argument(
        "--judge-runs",
        type=int_in(Range(1, 100_000)),
        default=200,
        help="simulated runs of the pure judge per scenario (default %(default)s)",
    )
    inc.add_argument("--seed", type=int, default=11)
    inc.add_argument("--json", type=Path, help="write the figures and every incident here")
    inc.set_defaults(handler=_bench_incident)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            return _run(args)
    except Terminated:
        print("coalmine: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("coalmine: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        handler: Handler = args.handler
        return handler(args, settings)
    except (CoalmineError, SettingsError) as exc:
        print(f"coalmine: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in WORKER_EXTRA_MODULES:
            raise
        print(
            f"coalmine: error: `coalmine {args.command}` needs the worker extra (there is no "
            f"module {exc.name!r}): pip install 'coalmine[worker]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
