"""The grammar of ``python -m starter``: every command with its arguments, options and
``--help`` texts, and a parser that raises :class:`UsageError` instead of exiting.

Each command's job (what it does once parsed) is in :mod:`starter.cli_commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from domain.cancellation import CanceledItem, CancellationStatus, ReasonCode
from domain.refund_plan import RefundMethod
from starter.cli_commands import (
    accept_job,
    bulk_cancel_job,
    confirm_refund_job,
    list_job,
    load_orders_job,
    not_in_a_running_loop,
    quote_job,
    reject_job,
    repayment_job,
    request_job,
    retry_refund_job,
    status_job,
    undo_job,
    withdraw_job,
)
from starter.cli_output import (
    DEFAULT_LIST_LIMIT,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    MAX_LIST_LIMIT,
    Job,
)
from starter.orders_file import error_details


class UsageError(Exception):
    """argparse refused the command line."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing and exiting on errors.

    So ``run`` can answer a bad command line like any other refusal, in JSON when
    asked, and tests can call it in-process.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


CONSOLE_SCRIPT = "order-cancellations"
"""The installed command (``pyproject.toml``); the same as ``python -m starter``."""


def _prog() -> str:
    """How the user called us, for the usage lines: the console script or the module."""
    return CONSOLE_SCRIPT if Path(sys.argv[0]).name == CONSOLE_SCRIPT else "python -m starter"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    json_option = _Parser(add_help=False)
    # SUPPRESS keeps a subcommand from resetting a --json given before it.
    json_option.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    parser = _Parser(
        prog=_prog(),
        description="Start and drive order cancellations.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in _PASS_THROUGH_HELP.items():
        # Listed for --help only: main() hands these commands over before parsing.
        command = commands.add_parser(name, help=help_text, add_help=False)
        command.set_defaults(prepare=not_in_a_running_loop)
    for name, spec in _COMMANDS.items():
        command = commands.add_parser(
            name, help=spec.help, description=spec.help, parents=[json_option]
        )
        spec.configure(command)
        command.set_defaults(prepare=spec.prepare)
    return parser


_EXIT_HELP = f"""exit codes:
  {EXIT_OK}  done
  {EXIT_USAGE}  usage or validation error
  {EXIT_NOT_FOUND}  order, cancellation or refund not found
  {EXIT_CONFLICT}  not possible in the current state (shipped, invalid transition, …)
  {EXIT_UNAVAILABLE}  Temporal, the database or the payment provider does not answer
  {EXIT_FAILURE}  any other refusal"""

_PASS_THROUGH_HELP = {
    "dev": "run the embedded dev stack until Ctrl-C (arguments go to it)",
    "demo": "walk through every scenario against a running stack (arguments go to it)",
    "bench": "measure cancellations against a bare workflow of the same shape (arguments go to it)",
    "chaos": "kill parts of a stack of its own while driving cancellations, then reconcile",
    "events": "`events tail [-f]`: print the events the dev stack's inbox received",
}


def _values(enum: type[Any]) -> list[str]:
    return [member.value for member in enum]


def _order_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shop", metavar="SHOP", help="the shop id")
    parser.add_argument("order", metavar="ORDER", help="the order id")


def _target_options(parser: argparse.ArgumentParser, *, actor: str) -> None:
    parser.add_argument(
        "--cancellation", metavar="ID", help="act on this cancellation, not the latest"
    )
    parser.add_argument(
        "--idempotency-key", metavar="K", help="a repeat with the same key takes effect once"
    )
    parser.add_argument("--actor", default=actor, help=f"who acts (default: {actor})")


def _bank_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the customer's bank account, for bank deposits")
    group.add_argument("--bank", metavar="NAME")
    group.add_argument("--account-number", metavar="N")
    group.add_argument("--holder", metavar="NAME")


def _decision_options(parser: argparse.ArgumentParser, *, reason_code_required: bool) -> None:
    parser.add_argument(
        "--reason-code",
        choices=_values(ReasonCode),
        required=reason_code_required,
        metavar="CODE",
        help=f"one of: {', '.join(_values(ReasonCode))}",
    )
    parser.add_argument("--reason", metavar="TEXT", help="the reason, for staff")
    parser.add_argument("--customer-note", metavar="TEXT", help="the reason, for the customer")
    parser.add_argument("--refund-method", choices=_values(RefundMethod), help="default: original")
    _bank_options(parser)
    parser.add_argument(
        "--no-restock", action="store_true", help="don't put the items back in stock"
    )
    parser.add_argument("--no-notify", action="store_true", help="don't notify the customer")


def _item_option(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument(
        "--item",
        dest="items",
        action="append",
        type=_canceled_item,
        metavar="ITEM_ID:QUANTITY",
        help=f"{what} only this quantity of this item (repeatable; default: all that remains)",
    )


def _configure_request(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    _item_option(parser, what="cancel")
    parser.add_argument(
        "--merchant",
        action="store_true",
        help="the merchant cancels: starts accepted, so --reason-code is required",
    )
    parser.add_argument(
        "--channel",
        choices=["admin", "contact"],
        help="with --merchant: admin (default), or contact when the customer phoned or wrote",
    )
    _decision_options(parser, reason_code_required=False)
    parser.add_argument("--actor", help="who starts it (default: customer:<id> or merchant)")


def _configure_accept(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    _decision_options(parser, reason_code_required=True)
    _target_options(parser, actor="merchant")


def _configure_reject(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("--reason", metavar="TEXT", required=True, help="the reason, for staff")
    parser.add_argument("--customer-note", metavar="TEXT", help="the reason, for the customer")
    _target_options(parser, actor="merchant")


def _configure_withdraw(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    _target_options(parser, actor="customer")


def _configure_confirm_refund(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("refund_id", metavar="REFUND_ID")
    parser.add_argument("--reference", required=True, help="the bank transfer's reference")
    _target_options(parser, actor="merchant")


def _configure_retry_refund(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("refund_id", metavar="REFUND_ID")
    parser.add_argument(
        "--method",
        choices=[RefundMethod.BANK_DEPOSIT.value, RefundMethod.CREDITS.value],
        help="switch the refund to this method (default: retry it as it was)",
    )
    _bank_options(parser)
    _target_options(parser, actor="merchant")


def _configure_undo(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("--reason", required=True, help="why (staff only)")
    parser.add_argument("--customer-note", help="what the customer is told")
    parser.add_argument(
        "--require-repayment",
        action="store_true",
        help="where the provider can't recapture a payment, have the customer pay again",
    )
    _target_options(parser, actor="merchant")


def _configure_repayment(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("--reference", required=True, help="the payment's reference")
    parser.add_argument("--amount", required=True, type=int, help="minor units paid")
    _target_options(parser, actor="merchant")


def _configure_status(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    parser.add_argument("--cancellation", metavar="ID", help="this cancellation, not the latest")


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shop", metavar="SHOP", help="the shop id")
    parser.add_argument(
        "--status",
        action="extend",
        nargs="+",
        choices=_values(CancellationStatus),
        metavar="S",
        help=f"only cancellations in these statuses: {', '.join(_values(CancellationStatus))}",
    )
    parser.add_argument(
        "--limit",
        type=_list_limit,
        help=f"at most N (1–{MAX_LIST_LIMIT}, default {DEFAULT_LIST_LIMIT})",
    )
    parser.add_argument("--cursor", metavar="C", help="the next_cursor of the previous page")
    parser.add_argument(
        "--order", metavar="ORDER", help="all cancellations of this order, latest first"
    )


def _configure_quote(parser: argparse.ArgumentParser) -> None:
    _order_arguments(parser)
    _item_option(parser, what="quote cancelling")
    parser.add_argument(
        "--refund-method", choices=_values(RefundMethod), default=RefundMethod.ORIGINAL.value
    )


def _configure_load_orders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.json", type=Path)


def _configure_bulk_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shop", metavar="SHOP", help="the shop id")
    parser.add_argument("sku", metavar="SKU", help="the SKU that can't be shipped")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would happen; start nothing"
    )
    parser.add_argument(
        "--reason-code",
        choices=_values(ReasonCode),
        default=ReasonCode.SOLD_OUT.value,
        metavar="CODE",
        help="default: sold_out",
    )
    parser.add_argument("--reason", metavar="TEXT", help="the reason, for staff")
    parser.add_argument(
        "--refund-method",
        choices=[RefundMethod.ORIGINAL.value, RefundMethod.CREDITS.value],
        help="default: original",
    )
    parser.add_argument("--restock", action="store_true", help="put the items back in stock")
    parser.add_argument("--no-notify", action="store_true", help="don't notify the customers")
    parser.add_argument(
        "--idempotency-key", metavar="K", help="a repeat with the same key joins the same job"
    )
    parser.add_argument("--actor", default="merchant", help="who acts (default: merchant)")
    parser.add_argument(
        "--wait", action="store_true", help="wait until every matched order has its outcome"
    )


def _canceled_item(value: str) -> CanceledItem:
    """``--item i1:2`` → ``CanceledItem(item_id="i1", quantity=2)``."""
    item_id, sep, quantity = value.rpartition(":")
    if not sep or not item_id or not quantity.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected ITEM_ID:QUANTITY, got {value!r}")
    try:
        return CanceledItem(item_id=item_id, quantity=int(quantity))
    except ValidationError as err:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error_details(err))
        raise argparse.ArgumentTypeError(f"{value!r}: {problems}") from None


def _list_limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIST_LIMIT}")
    return limit


@dataclass(frozen=True)
class _Command:
    """A command: its help, its arguments and options, and what prepares its job."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Job]


_COMMANDS = {
    "request": _Command(
        "start a cancellation (a customer's request by default)", _configure_request, request_job
    ),
    "accept": _Command(
        "accept the cancellation with a reason and a refund method", _configure_accept, accept_job
    ),
    "reject": _Command("reject the customer's request", _configure_reject, reject_job),
    "withdraw": _Command("the customer takes the request back", _configure_withdraw, withdraw_job),
    "confirm-refund": _Command(
        "confirm a manual bank deposit", _configure_confirm_refund, confirm_refund_job
    ),
    "retry-refund": _Command(
        "retry a failed refund, or switch its method", _configure_retry_refund, retry_refund_job
    ),
    "undo": _Command("undo the cancellation (checks recapture first)", _configure_undo, undo_job),
    "repayment": _Command(
        "the customer paid again after an undo", _configure_repayment, repayment_job
    ),
    "status": _Command("show the order's latest cancellation", _configure_status, status_job),
    "list": _Command("list a shop's (or an order's) cancellations", _configure_list, list_job),
    "quote": _Command(
        "show the refund plan an acceptance would produce", _configure_quote, quote_job
    ),
    "load-orders": _Command(
        "load settings, stock, balances and orders from a JSON file",
        _configure_load_orders,
        load_orders_job,
    ),
    "bulk-cancel": _Command(
        "cancel every open order holding a SKU (sold out, defective)",
        _configure_bulk_cancel,
        bulk_cancel_job,
    ),
}
