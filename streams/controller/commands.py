"""The controller's subcommands of ``coalmine``: ``controller`` and the operator's commands.

:func:`add_commands` declares them on the command line's subparsers; each handler imports
what it needs when it runs, so ``coalmine --help`` loads none of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.command import CommandAction
from streams.cliargs import float_in, int_in
from streams.settings import Range

if TYPE_CHECKING:
    from streams.settings import Settings

ANSWER_WAIT_S = Range(0, 600, low_open=True)
GATE_INTERVAL_S = Range(0.1, 3600)
GENERATION = Range(0, 2**62)


def _controller(args: argparse.Namespace, settings: Settings) -> int:
    from streams.controller import process  # noqa: PLC0415
    from streams.controller.figures import ClickHouseEvalFigures  # noqa: PLC0415

    return process.run(settings, ClickHouseEvalFigures(settings), args.gate_interval)


def _command(args: argparse.Namespace, settings: Settings) -> int:
    from streams.controller import client  # noqa: PLC0415

    action = CommandAction(args.command)
    fields: dict[str, object] = {"reason": args.reason, "issued_by": args.issued_by}
    if action is CommandAction.DEPLOY:
        fields["version"] = args.version
        fields["expected_generation"] = args.expected_generation
        if args.plan is not None:
            fields["plan"] = client.load_plan(args.plan)
    elif action is CommandAction.ROLLBACK:
        fields["version"] = args.to
    elif action is CommandAction.PROMOTE:
        fields["full"] = args.full
    if action is not CommandAction.DEPLOY and args.expected_generation is not None:
        fields["expected_generation"] = args.expected_generation
    command = client.new_command(args.agent, action, **fields)
    return client.run(settings, command, args.wait)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from streams.controller import client  # noqa: PLC0415

    return client.status(settings, args.agent, args.json)


def _default_issuer() -> str:
    import getpass  # noqa: PLC0415

    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError):
        return "cli"


HELP = {
    CommandAction.DEPLOY: "start a rollout of a registered version (first deploy: stable at once)",
    CommandAction.PROMOTE: "end the current step now (--full: make the canary stable)",
    CommandAction.ROLLBACK: "take the canary out of traffic, or go back to an earlier stable",
    CommandAction.PAUSE: "hold the canary at its weight",
    CommandAction.RESUME: "resume a paused rollout (the step's minimum duration restarts)",
    CommandAction.APPROVE: "let the step that waits for approval start",
    CommandAction.ABORT: "end the rollout: the canary gets no traffic",
}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    controller = commands.add_parser(
        "controller", help="run the deployment controller (single writer of deployment state)"
    )
    controller.add_argument(
        "--gate-interval",
        type=float_in(GATE_INTERVAL_S),
        default=2.0,
        help="seconds between reads of a gated version's evaluation figures",
    )
    controller.set_defaults(handler=_controller)
    for action, text in HELP.items():
        parser = commands.add_parser(action.value, help=text, description=text)
        parser.add_argument("agent")
        if action is CommandAction.DEPLOY:
            parser.add_argument("version")
            parser.add_argument("--plan", type=Path, help="rollout plan, JSON or YAML")
        if action is CommandAction.ROLLBACK:
            parser.add_argument("--to", help="a version that was stable before")
        if action is CommandAction.PROMOTE:
            parser.add_argument("--full", action="store_true", help="skip every remaining step")
        parser.add_argument("--reason", default="", help="why, for the audit trail")
        parser.add_argument(
            "--expected-generation",
            type=int_in(GENERATION),
            help="refused unless the deployment is at this generation",
        )
        parser.add_argument("--issued-by", default=_default_issuer(), help="default: your user")
        parser.add_argument(
            "--wait",
            type=float_in(ANSWER_WAIT_S),
            default=10.0,
            help="seconds to wait for the controller's answer",
        )
        parser.set_defaults(handler=_command)
    status = commands.add_parser("status", help="deployment state of every agent, or one")
    status.add_argument("agent", nargs="?")
    status.add_argument("--json", action="store_true", help="the full records as JSON")
    status.set_defaults(handler=_status)
