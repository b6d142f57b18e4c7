"""``python -m starter <command>``: the command line over :class:`CancellationClient`.

Commands::

    dev [ARGS…]                 the embedded dev stack (arguments go to tools.devstack)
    demo [ARGS…]                walk through the seed's scenarios (arguments go to tools.demo)
    bench [ARGS…]               the benchmark (arguments go to tools.bench; docs/performance.md)
    chaos [ARGS…]               the chaos run (arguments go to tools.chaos; docs/reliability.md)
    request SHOP ORDER          a customer's request from My Account; with --merchant, the
                                merchant's own cancellation, which starts accepted;
                                --item ITEM_ID:QUANTITY (repeatable) cancels only those
    accept SHOP ORDER           the merchant accepts with a reason code and a refund method
    reject SHOP ORDER           the merchant refuses the request (--reason)
    withdraw SHOP ORDER         the customer takes the request back
    confirm-refund SHOP ORDER REFUND_ID --reference R
    retry-refund SHOP ORDER REFUND_ID [--method bank_deposit|credits]
    status SHOP ORDER           the order's latest cancellation (or --cancellation ID)
    list SHOP                   the shop's cancellations, newest first (or --order ORDER)
    quote SHOP ORDER            the refund plan an acceptance would produce; changes nothing
                                (--item ITEM_ID:QUANTITY: of cancelling only those)
    load-orders FILE.json       create or replace shops' settings, stock, balances and orders
    bulk-cancel SHOP SKU        cancel every open order holding the SKU (one job; --dry-run
                                shows each order's outcome and refund plan, starting nothing;
                                --wait follows the job until every order has its outcome)

Output is for people by default. ``--json`` (before or after the command) prints exactly
one JSON document: the view; ``{"created", "cancellation"}`` for a start;
``{"items", "next_cursor"}`` for a list; ``{"error": {"code", "message"}}`` on failure.
Bank account numbers are never printed; views carry only the masked number.

Settings come from the environment. Run inside the project folder (or below it) while
the dev stack runs, the commands find it by themselves: what the shell does not set is
read from the project's ``.devstack/env`` (when it is the user's own and private, as the
dev stack writes it); variables the shell sets win.

Exit codes (one table, :data:`EXIT_CODES`): 0 done; 2 usage or validation error;
3 not found; 4 conflict with the current state; 5 a service (Temporal, the database,
the payment provider) does not answer; 1 any other refusal; 130 interrupted.

The load-orders file::

    {"shops": {
        "<shop_id>": {
            "settings": {"customer_cancellation_requests": true, "undo_window": "P30D", …},
            "stock": {"<sku>": 12},
            "customers": {"<customer_id>": {"points": 0, "credits": 0}},
            "orders": {"<order_id>": <order document, as PUT …/orders/{order_id} takes it>}
        }
    }}

Every key but ``shops`` and ``orders`` may be left out. A card tender names its
provider payment with ``payment_id``, or carries ``"payment": {"capture": true,
"behavior": {"refund": "succeed"|"decline"|"pending", "settle_after_seconds": 5,
"recapture": "restorable"|"reauth_required"|"not_possible",
"recapture_window_seconds": 86400}}`` instead: load-orders then creates that payment in
the provider sandbox (``capture: false`` leaves it only authorized) with the idempotency
key ``load-<shop>-<order>-<tender>``, so loading the file again reuses the payment.
Changing such a tender's amount or payment later needs a new tender or order id.

The whole file is validated before anything is written: a bad file changes nothing and
the error lists every problem with its path (``shops.s1.orders.o1.tenders[0].amount``).
Then the sandbox payments are created, and only then the store is written, shop by shop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from domain.bank import BankAccount
from domain.bulk import BulkRequest, BulkStatus
from domain.cancellation import (
    CanceledItem,
    CancellationStatus,
    ReasonCode,
)
from domain.errors import CancellationError, ErrorCode
from domain.refund_plan import RefundMethod
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    StartRequest,
    UndoRequest,
)
from starter import outages
from starter.bulk import BulkClient
from starter.cli_output import (
    DEFAULT_LIST_LIMIT,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    MAX_LIST_LIMIT,
    PASS_THROUGH,
    Context,
    Job,
    Listing,
    Result,
    Started,
    _emit,
    _report_error,
)
from starter.client import CancellationClient
from starter.config import ConfigError, Settings, dev_stack_environment, find_project_folder
from starter.orders_file import (
    error_details,
    load_orders,
    read_orders_file,
)

# ---------------------------------------------------------------------------- entry points


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (``python -m starter`` exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    pass_through = _pass_through_command(args)
    if pass_through is not None:
        return _run_module(*pass_through)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def run(
    argv: Sequence[str],
    *,
    client: CancellationClient | None = None,
    settings: Settings | None = None,
) -> int:
    """Run one command other than ``dev`` and ``demo`` inside a running event loop.

    Args:
        argv: The arguments after ``python -m starter``.
        client: A client to use instead of connecting as the environment says; it is
            left open. Tests pass theirs, with its own task queue.
        settings: Settings to use instead of reading the environment.

    Returns:
        The exit status; output went to stdout, error messages to stderr.
    """
    as_json = "--json" in argv  # until the command line is parsed
    try:
        parsed = _parse(argv)
        if isinstance(parsed, int):
            return parsed
        as_json = bool(parsed.json)
        job: Job = parsed.prepare(parsed)
        result = await _run_job(job, client, settings)
    except _UsageError as err:
        return _report_usage_error(err, as_json)
    except CancellationError as err:
        return _report_error(err, as_json)
    _emit(result, as_json)
    return EXIT_OK


def _pass_through_command(argv: list[str]) -> tuple[str, list[str]] | None:
    """``dev``/``demo`` and the arguments for them, untouched by our parser."""
    for index, token in enumerate(argv):
        if token == "--json":
            continue
        return (token, argv[index + 1 :]) if token in PASS_THROUGH else None
    return None


def _run_module(command: str, argv: list[str]) -> int:
    # Imported only now: the dev stack and demo pull in servers the other commands
    # don't need, and the CLI must work where they are not installed.
    module_name = PASS_THROUGH[command]
    # The tooling (``tools/``) is part of a source checkout, not of the installed product:
    # found from the project folder the command runs in.
    project = find_project_folder(Path.cwd())
    if project is not None and str(project) not in sys.path:
        sys.path.insert(0, str(project))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # the module, or a server package it needs
        print(
            f"error: `{command}` is development tooling from a source checkout of this"
            f" project (run it inside the project folder): {err}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    entry: Callable[[list[str]], int] = module.main
    return entry(argv)


def _parse(argv: Sequence[str]) -> argparse.Namespace | int:
    """The parsed command line, or the exit status after ``--help``."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit_:  # only --help gets here; errors raise _UsageError
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK


async def _run_job(
    job: Job, client: CancellationClient | None, settings: Settings | None
) -> Result:
    settings = settings or _settings_from_env()
    if client is not None:
        return await _guard_database(job, Context(client, settings))
    _require_database(settings)
    own = await CancellationClient.connect(settings)
    try:
        return await _guard_database(job, Context(own, settings))
    finally:
        await own.close()


async def _guard_database(job: Job, context: Context) -> Result:
    try:
        return await job(context)
    except outages.DATABASE_OUTAGES as err:
        # Lost mid-command, out of disk, shut down: a service problem, not a bug.
        raise CancellationError(
            ErrorCode.DATABASE_UNAVAILABLE,
            f"the store database can't serve requests right now ({type(err).__name__}): {err}",
        ) from None


def _settings_from_env() -> Settings:
    # Inside the project folder, a running dev stack's .devstack/env fills in what the
    # shell does not set: no `source .devstack/env` needed in a second shell.
    try:
        return Settings.from_env(dev_stack_environment(os.environ, Path.cwd()))
    except ValueError as err:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, f"configuration: {err}") from None


def _require_database(settings: Settings) -> None:
    # Checked before connecting to Temporal, so a missing URL is reported as itself.
    try:
        settings.require_database()
    except ConfigError as missing:
        raise CancellationError(ErrorCode.DATABASE_UNAVAILABLE, str(missing)) from None


# ---------------------------------------------------------------------------- the parser


class _UsageError(Exception):
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
        raise _UsageError(message, self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    json_option = _Parser(add_help=False)
    # SUPPRESS keeps a subcommand from resetting a --json given before it.
    json_option.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    parser = _Parser(
        prog="python -m starter",
        description="Start and drive order cancellations.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in _PASS_THROUGH_HELP.items():
        # Listed for --help only: main() hands these commands over before parsing.
        command = commands.add_parser(name, help=help_text, add_help=False)
        command.set_defaults(prepare=_not_in_a_running_loop)
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


def _not_in_a_running_loop(args: argparse.Namespace) -> Job:
    raise CancellationError(
        ErrorCode.VALIDATION_ERROR,
        f"`{args.command}` runs its own event loop: start it through main()",
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


# ---------------------------------------------------------------------------- commands
#
# Each command reads and validates its arguments first and returns a Job, so a bad
# command line is refused before anything connects to Temporal or the database.


def _request(args: argparse.Namespace) -> Job:
    request = _start_request(args)

    async def job(ctx: Context) -> Result:
        view, created = await ctx.client.start_cancellation(
            args.shop, args.order, request, actor=args.actor
        )
        return Started(created=created, cancellation=view)

    return job


def _accept(args: argparse.Namespace) -> Job:
    request = _accept_request(args)

    async def job(ctx: Context) -> Result:
        return await ctx.client.accept(args.shop, args.order, request, **_target(args))

    return job


def _reject(args: argparse.Namespace) -> Job:
    request = _build(RejectRequest, reason=args.reason, customer_note=args.customer_note)

    async def job(ctx: Context) -> Result:
        return await ctx.client.reject(args.shop, args.order, request, **_target(args))

    return job


def _withdraw(args: argparse.Namespace) -> Job:
    async def job(ctx: Context) -> Result:
        return await ctx.client.withdraw(args.shop, args.order, **_target(args))

    return job


def _confirm_refund(args: argparse.Namespace) -> Job:
    request = _build(ConfirmRefundRequest, reference=args.reference)

    async def job(ctx: Context) -> Result:
        return await ctx.client.confirm_refund(
            args.shop, args.order, args.refund_id, request, **_target(args)
        )

    return job


def _retry_refund(args: argparse.Namespace) -> Job:
    request = _build(RetryRefundRequest, method=args.method, bank_account=_bank_account(args))

    async def job(ctx: Context) -> Result:
        return await ctx.client.retry_refund(
            args.shop, args.order, args.refund_id, request, **_target(args)
        )

    return job


def _undo(args: argparse.Namespace) -> Job:
    request = _build(
        UndoRequest,
        reason=args.reason,
        customer_note=args.customer_note,
        require_repayment=args.require_repayment,
    )

    async def job(ctx: Context) -> Result:
        return await ctx.client.undo(args.shop, args.order, request, **_target(args))

    return job


def _repayment(args: argparse.Namespace) -> Job:
    request = _build(RepaymentRequest, reference=args.reference, amount=args.amount)

    async def job(ctx: Context) -> Result:
        return await ctx.client.confirm_repayment(args.shop, args.order, request, **_target(args))

    return job


def _status(args: argparse.Namespace) -> Job:
    async def job(ctx: Context) -> Result:
        return await ctx.client.get_cancellation(args.shop, args.order, args.cancellation)

    return job


def _list(args: argparse.Namespace) -> Job:
    if args.order is not None:
        if args.status or args.limit is not None or args.cursor is not None:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                "--order lists all of one order's cancellations;"
                " --status, --limit and --cursor apply to the shop's list",
            )
        return _list_of_order(args.shop, args.order)
    statuses = [CancellationStatus(s) for s in args.status or []]
    limit: int = args.limit or DEFAULT_LIST_LIMIT

    async def job(ctx: Context) -> Result:
        page = await ctx.client.list_cancellations(
            args.shop, statuses=statuses, limit=limit, cursor=args.cursor
        )
        return Listing(items=page.items, next_cursor=page.next_cursor)

    return job


def _list_of_order(shop_id: str, order_id: str) -> Job:
    async def job(ctx: Context) -> Result:
        return Listing(items=await ctx.client.cancellations_of_order(shop_id, order_id))

    return job


def _quote(args: argparse.Namespace) -> Job:
    method = RefundMethod(args.refund_method)
    items: list[CanceledItem] | None = args.items

    async def job(ctx: Context) -> Result:
        return await ctx.client.quote(args.shop, args.order, method, items)

    return job


def _load_orders(args: argparse.Namespace) -> Job:
    path: Path = args.file
    orders_file, payments = read_orders_file(path)

    async def job(ctx: Context) -> Result:
        return await load_orders(ctx.client, ctx.settings, orders_file, payments, source=path)

    return job


BULK_POLL_SECONDS = 0.5


def _bulk_cancel(args: argparse.Namespace) -> Job:
    request = _build(
        BulkRequest,
        sku=args.sku,
        reason_code=args.reason_code,
        reason=args.reason,
        refund_method=args.refund_method,
        restock=args.restock,
        notify_customer=not args.no_notify,
        dry_run=args.dry_run,
    )

    async def job(ctx: Context) -> Result:
        bulk = BulkClient(ctx.client, task_queue=ctx.settings.task_queue)
        if request.dry_run:
            return await bulk.dry_run(args.shop, request)
        started = await bulk.start(
            args.shop, request, actor=args.actor, idempotency_key=args.idempotency_key
        )
        while args.wait and started.status is BulkStatus.RUNNING:
            await asyncio.sleep(BULK_POLL_SECONDS)
            started = await bulk.get(args.shop, started.bulk_id)
        return started

    return job


@dataclass(frozen=True)
class _Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Job]


_COMMANDS = {
    "request": _Command(
        "start a cancellation (a customer's request by default)", _configure_request, _request
    ),
    "accept": _Command(
        "accept the cancellation with a reason and a refund method", _configure_accept, _accept
    ),
    "reject": _Command("reject the customer's request", _configure_reject, _reject),
    "withdraw": _Command("the customer takes the request back", _configure_withdraw, _withdraw),
    "confirm-refund": _Command(
        "confirm a manual bank deposit", _configure_confirm_refund, _confirm_refund
    ),
    "retry-refund": _Command(
        "retry a failed refund, or switch its method", _configure_retry_refund, _retry_refund
    ),
    "undo": _Command("undo the cancellation (checks recapture first)", _configure_undo, _undo),
    "repayment": _Command(
        "the customer paid again after an undo", _configure_repayment, _repayment
    ),
    "status": _Command("show the order's latest cancellation", _configure_status, _status),
    "list": _Command("list a shop's (or an order's) cancellations", _configure_list, _list),
    "quote": _Command("show the refund plan an acceptance would produce", _configure_quote, _quote),
    "load-orders": _Command(
        "load settings, stock, balances and orders from a JSON file",
        _configure_load_orders,
        _load_orders,
    ),
    "bulk-cancel": _Command(
        "cancel every open order holding a SKU (sold out, defective)",
        _configure_bulk_cancel,
        _bulk_cancel,
    ),
}


# ---------------------------------------------------------------------------- requests

ModelT = TypeVar("ModelT", bound=BaseModel)


def _build(model: type[ModelT], **fields: Any) -> ModelT:
    """Validate options into a request; unset options (``None``) take the model's default.

    Problems are named by the option that caused them (``--reason-code: Field required``).
    """
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(_option_problem(e) for e in error_details(err))
        raise CancellationError(ErrorCode.VALIDATION_ERROR, problems) from None


def _option_problem(error: ErrorDetails) -> str:
    # The options are named after the fields (reason_code → --reason-code).
    names = [part for part in error["loc"] if isinstance(part, str)]
    option = "--" + names[-1].replace("_", "-") if names else "input"
    return f"{option}: {error['msg']}"


def _start_request(args: argparse.Namespace) -> StartRequest:
    if not args.merchant:
        stray = [option for option, given in _merchant_options(args) if given]
        if stray:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                f"{', '.join(stray)}: only for a merchant cancellation (--merchant)",
            )
        return _build(
            StartRequest,
            initiated_by="customer",
            channel="my_account",
            reason_code=args.reason_code,
            reason=args.reason,
            items=args.items,
        )
    return _build(
        StartRequest,
        initiated_by="merchant",
        channel=args.channel or "admin",
        reason_code=args.reason_code,
        reason=args.reason,
        items=args.items,
        accept=_accept_request(args),
    )


def _merchant_options(args: argparse.Namespace) -> list[tuple[str, bool]]:
    return [
        ("--channel", args.channel is not None),
        ("--customer-note", args.customer_note is not None),
        ("--refund-method", args.refund_method is not None),
        ("--bank/--account-number/--holder", _bank_given(args)),
        ("--no-restock", args.no_restock),
        ("--no-notify", args.no_notify),
    ]


def _accept_request(args: argparse.Namespace) -> AcceptRequest:
    return _build(
        AcceptRequest,
        reason_code=args.reason_code,
        reason=args.reason,
        customer_note=args.customer_note,
        refund_method=args.refund_method,
        bank_account=_bank_account(args),
        restock=not args.no_restock,
        notify_customer=not args.no_notify,
    )


def _bank_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.bank, args.account_number, args.holder))


def _bank_account(args: argparse.Namespace) -> BankAccount | None:
    if not _bank_given(args):
        return None
    if None in (args.bank, args.account_number, args.holder):
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, "--bank, --account-number and --holder go together"
        )
    return _build(
        BankAccount, bank=args.bank, account_number=args.account_number, holder=args.holder
    )


def _target(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cancellation_id": args.cancellation,
        "idempotency_key": args.idempotency_key,
        "actor": args.actor,
    }


def _report_usage_error(err: _UsageError, as_json: bool) -> int:
    if not as_json:
        print(err.usage, end="", file=sys.stderr)
    return _report_error(CancellationError(ErrorCode.VALIDATION_ERROR, err.message), as_json)
