"""What each command of ``python -m starter`` does: its options validated into a request
up front, then the job that calls :class:`~starter.client.CancellationClient`.

A bad command line is refused before anything connects to Temporal or the database;
:mod:`starter.cli_parser` pairs each job with its command's options.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from domain.bank import BankAccount
from domain.bulk import BulkRequest, BulkStatus
from domain.cancellation import CanceledItem, CancellationStatus
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
from starter.bulk import BulkClient
from starter.cli_output import DEFAULT_LIST_LIMIT, Context, Job, Listing, Result, Started
from starter.client import CancellationClient
from starter.orders_file import error_details, load_orders, read_orders_file

BULK_POLL_SECONDS = 0.5
"""How often ``bulk-cancel --wait`` asks after its job."""

# ---------------------------------------------------------------------------- commands


def _with_client(act: Callable[[CancellationClient], Awaitable[Result]]) -> Job:
    """The job that does ``act`` with the command's client and answers what it answers."""

    async def job(ctx: Context) -> Result:
        return await act(ctx.client)

    return job


def not_in_a_running_loop(args: argparse.Namespace) -> Job:
    """``dev``, ``demo`` and the like are handed over before parsing; never run from here."""
    raise CancellationError(
        ErrorCode.VALIDATION_ERROR,
        f"`{args.command}` runs its own event loop: start it through main()",
    )


def request_job(args: argparse.Namespace) -> Job:
    request = _start_request(args)

    async def job(ctx: Context) -> Result:
        view, created = await ctx.client.start_cancellation(
            args.shop, args.order, request, actor=args.actor
        )
        return Started(created=created, cancellation=view)

    return job


def accept_job(args: argparse.Namespace) -> Job:
    request = _accept_request(args)
    return _with_client(
        lambda client: client.accept(args.shop, args.order, request, **_target(args))
    )


def reject_job(args: argparse.Namespace) -> Job:
    request = _build(RejectRequest, reason=args.reason, customer_note=args.customer_note)
    return _with_client(
        lambda client: client.reject(args.shop, args.order, request, **_target(args))
    )


def withdraw_job(args: argparse.Namespace) -> Job:
    return _with_client(lambda client: client.withdraw(args.shop, args.order, **_target(args)))


def confirm_refund_job(args: argparse.Namespace) -> Job:
    request = _build(ConfirmRefundRequest, reference=args.reference)
    return _with_client(
        lambda client: client.confirm_refund(
            args.shop, args.order, args.refund_id, request, **_target(args)
        )
    )


def retry_refund_job(args: argparse.Namespace) -> Job:
    request = _build(RetryRefundRequest, method=args.method, bank_account=_bank_account(args))
    return _with_client(
        lambda client: client.retry_refund(
            args.shop, args.order, args.refund_id, request, **_target(args)
        )
    )


def undo_job(args: argparse.Namespace) -> Job:
    request = _build(
        UndoRequest,
        reason=args.reason,
        customer_note=args.customer_note,
        require_repayment=args.require_repayment,
    )
    return _with_client(lambda client: client.undo(args.shop, args.order, request, **_target(args)))


def repayment_job(args: argparse.Namespace) -> Job:
    request = _build(RepaymentRequest, reference=args.reference, amount=args.amount)
    return _with_client(
        lambda client: client.confirm_repayment(args.shop, args.order, request, **_target(args))
    )


def status_job(args: argparse.Namespace) -> Job:
    return _with_client(
        lambda client: client.get_cancellation(args.shop, args.order, args.cancellation)
    )


def list_job(args: argparse.Namespace) -> Job:
    if args.order is not None:
        if args.status or args.limit is not None or args.cursor is not None:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                "--order lists all of one order's cancellations;"
                " --status, --limit and --cursor apply to the shop's list",
            )
        return _list_of_order_job(args.shop, args.order)
    statuses = [CancellationStatus(s) for s in args.status or []]
    limit: int = args.limit or DEFAULT_LIST_LIMIT

    async def job(ctx: Context) -> Result:
        page = await ctx.client.list_cancellations(
            args.shop, statuses=statuses, limit=limit, cursor=args.cursor
        )
        return Listing(items=page.items, next_cursor=page.next_cursor)

    return job


def _list_of_order_job(shop_id: str, order_id: str) -> Job:
    async def job(ctx: Context) -> Result:
        return Listing(items=await ctx.client.cancellations_of_order(shop_id, order_id))

    return job


def quote_job(args: argparse.Namespace) -> Job:
    method = RefundMethod(args.refund_method)
    items: list[CanceledItem] | None = args.items

    return _with_client(lambda client: client.quote(args.shop, args.order, method, items))


def load_orders_job(args: argparse.Namespace) -> Job:
    path: Path = args.file
    orders_file, payments = read_orders_file(path)

    async def job(ctx: Context) -> Result:
        return await load_orders(ctx.client, ctx.settings, orders_file, payments, source=path)

    return job


def bulk_cancel_job(args: argparse.Namespace) -> Job:
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
