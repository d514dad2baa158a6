"""``coalmine approvals list | approve | deny``: thin adapters over
:mod:`streams.approvals.client`; handlers import it when they run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from streams.controller.commands import _default_issuer

if TYPE_CHECKING:
    from streams.settings import Settings


def add_approvals_parser(commands: Any) -> None:
    """Add ``approvals`` and its actions to the ``coalmine`` subcommands."""
    approvals = commands.add_parser(
        "approvals", help="tool calls waiting for a person: list, approve, deny"
    )
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")

    text = "approval requests still pending (--all: every one, with what came of it)"
    listing = actions.add_parser("list", help=text, description=text)
    listing.add_argument("--agent", help="only this agent's requests")
    listing.add_argument("--all", action="store_true", help="decided and timed out ones too")
    listing.add_argument(
        "--follow", action="store_true", help="then print new requests and decisions as they come"
    )
    listing.set_defaults(handler=_list)

    for action, text, reason_help in (
        ("approve", "let a waiting tool call run", "why, for the audit trail"),
        (
            "deny",
            "refuse a waiting tool call (the agent gets ApprovalDeniedError)",
            "why (required)",
        ),
    ):
        parser = actions.add_parser(action, help=text, description=text)
        parser.add_argument("id", help="the request's id, from `coalmine approvals list`")
        parser.add_argument("--reason", required=action == "deny", default="", help=reason_help)
        parser.add_argument(
            "--by", default=_default_issuer(), help="who decides (default: your user)"
        )
        parser.set_defaults(handler=_decide, decision=action)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from streams.approvals import client  # noqa: PLC0415

    return client.list_requests(settings, args.agent, args.all, args.follow)


def _decide(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.approval import Decision  # noqa: PLC0415
    from streams.approvals import client  # noqa: PLC0415

    return client.decide(settings, args.id, Decision(args.decision), args.by, args.reason)
