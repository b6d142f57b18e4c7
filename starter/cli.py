"""``python -m starter <command>``: the command line over :class:`CancellationClient`.

This module runs a command; :mod:`starter.cli_parser` reads the command line,
:mod:`starter.cli_commands` holds what each command does, :mod:`starter.cli_output` prints.

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
from pathlib import Path

from domain.errors import CancellationError, ErrorCode
from starter import outages
from starter.cli_commands import BULK_POLL_SECONDS as BULK_POLL_SECONDS
from starter.cli_output import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PASS_THROUGH,
    Context,
    Job,
    Result,
    _emit,
    _report_error,
)
from starter.cli_parser import UsageError, build_parser
from starter.client import CancellationClient
from starter.config import ConfigError, Settings, dev_stack_environment, find_project_folder

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
    except UsageError as err:
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
    except SystemExit as exit_:  # only --help gets here; errors raise UsageError
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


def _report_usage_error(err: UsageError, as_json: bool) -> int:
    if not as_json:
        print(err.usage, end="", file=sys.stderr)
    return _report_error(CancellationError(ErrorCode.VALIDATION_ERROR, err.message), as_json)
