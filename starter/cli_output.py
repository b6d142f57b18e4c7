"""What the CLI answers: exit statuses per error code, the result models, and how each
result prints for a person (or as one JSON document with ``--json``)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from domain.bulk import BulkDryRun, BulkJob
from domain.cancellation import (
    CanceledItem,
    CancellationView,
    RefundLine,
)
from domain.errors import CancellationError, ErrorCode
from domain.money import format_money
from domain.requests import (
    Quote,
)
from starter.client import CancellationClient
from starter.config import Settings
from starter.orders_file import (
    LoadReport,
    ShopLoaded,
)

# ---------------------------------------------------------------------------- exit codes

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
"""argparse exits with 2 on a bad command line; validation errors share it."""
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130
"""The shell's convention for Ctrl-C (128 + SIGINT)."""

EXIT_CODES: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: EXIT_USAGE,
    ErrorCode.ORDER_NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.CANCELLATION_NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.REFUND_NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.ORDER_SHIPPED: EXIT_CONFLICT,
    ErrorCode.CUSTOMER_REQUESTS_DISABLED: EXIT_CONFLICT,
    ErrorCode.INVALID_TRANSITION: EXIT_CONFLICT,
    ErrorCode.UNDO_WINDOW_CLOSED: EXIT_CONFLICT,
    ErrorCode.OUT_OF_STOCK: EXIT_CONFLICT,
    ErrorCode.RECAPTURE_UNAVAILABLE: EXIT_CONFLICT,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: EXIT_CONFLICT,
    ErrorCode.TEMPORAL_UNAVAILABLE: EXIT_UNAVAILABLE,
    ErrorCode.DATABASE_UNAVAILABLE: EXIT_UNAVAILABLE,
    ErrorCode.PROVIDER_UNAVAILABLE: EXIT_UNAVAILABLE,
    ErrorCode.PAYMENT_MISMATCH: EXIT_USAGE,
    ErrorCode.ORDER_LOCKED: EXIT_CONFLICT,
    ErrorCode.BULK_CANCELLATION_NOT_FOUND: EXIT_NOT_FOUND,
}
"""The exit status of each refusal; codes not listed (``unauthorized``, …) exit 1."""


def exit_code(code: ErrorCode) -> int:
    """The process exit status for a refusal with this code."""
    return EXIT_CODES.get(code, EXIT_FAILURE)


# Commands that run their own event loop and parse their own arguments.
PASS_THROUGH = {
    "dev": "tools.devstack",
    "demo": "tools.demo",
    "bench": "tools.bench",
    "chaos": "tools.chaos",
    "events": "tools.events_inbox",
}

# A view shows this many of its latest history entries; --json has them all.
HISTORY_LINES = 5
# A page of `list`: the client's default size, and a bound that keeps one answer readable.
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
# The stock column is a PostgreSQL integer.

# ---------------------------------------------------------------------------- results


class Started(BaseModel):
    """What ``request`` answers: the cancellation, and whether this call started it."""

    created: bool
    cancellation: CancellationView


class Listing(BaseModel):
    """What ``list`` answers: one page, newest first."""

    items: list[CancellationView]
    next_cursor: str | None = None


Result = CancellationView | Started | Listing | Quote | LoadReport | BulkJob | BulkDryRun


@dataclass(frozen=True)
class Context:
    """What a command needs once the command line was read: the client and settings."""

    client: CancellationClient
    settings: Settings


Job = Callable[[Context], Awaitable[Result]]
"""A command, validated and ready to run against the services."""


# ---------------------------------------------------------------------------- output


def _emit(result: Result, as_json: bool) -> None:
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        print(_render(result))


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _report_error(err: CancellationError, as_json: bool) -> int:
    if as_json:
        _print_json({"error": {"code": err.code.value, "message": err.message}})
    else:
        print(f"error: {err.code.value}: {err.message}", file=sys.stderr)
    return exit_code(err.code)


def _render(result: Result) -> str:
    if isinstance(result, CancellationView):
        return "\n".join(_view_lines(result))
    if isinstance(result, Started):
        first = (
            "started a new cancellation"
            if result.created
            else "the order has an open cancellation already; showing it"
        )
        return "\n".join([first, *_view_lines(result.cancellation)])
    if isinstance(result, Listing):
        return "\n".join(_listing_lines(result))
    if isinstance(result, Quote):
        return "\n".join(_quote_lines(result))
    if isinstance(result, BulkJob):
        return "\n".join(_bulk_job_lines(result))
    if isinstance(result, BulkDryRun):
        return "\n".join(_dry_run_lines(result))
    return "\n".join(_load_report_lines(result))


def _view_lines(view: CancellationView) -> list[str]:
    closed = "  (closed)" if view.closed else ""
    lines = [
        f"{view.cancellation_id} {view.status}  order: {view.order_status or '-'}{closed}",
        f"started by {view.initiated_by} via {view.channel};"
        f" reason: {view.reason_code or '-'}{_quoted(view.reason)}",
    ]
    if view.items:
        lines.append(f"items: {_items_text(view.items)}")
    if view.customer_note:
        lines.append(f"note to the customer: {view.customer_note}")
    if view.refundable is not None:
        lines.append(
            f"refundable: {view.refundable}  refunded: {view.refunded or '-'}"
            f"  method: {view.refund_method or '-'}"
        )
    if view.repayment_due is not None:
        lines.append(f"repayment due: {view.repayment_due}")
    if view.needs_attention is not None:
        lines.append(f"needs attention: {view.needs_attention}")
    if view.undo_until is not None and not view.closed:
        lines.append(f"undo possible until: {_time(view.undo_until)}")
    if view.refunds:
        lines += ["refunds:", *_refund_table(view)]
    lines.append(f"allowed actions: {', '.join(view.allowed_actions) or 'none'}")
    return lines + _history_lines(view)


def _items_text(items: Sequence[CanceledItem]) -> str:
    """``i1×1, i2×2``: the quantities a partial cancellation covers."""
    return ", ".join(f"{item.item_id}×{item.quantity}" for item in items)


def _refund_table(view: CancellationView) -> list[str]:
    money = view.refundable or view.refunded
    currency = money.currency if money is not None else None
    rows = [
        [
            line.refund_id,
            line.tender_id,
            line.tender_kind,
            line.method,
            format_money(line.amount, currency) if currency else str(line.amount),
            line.status,
            _refund_detail(line),
        ]
        for line in view.refunds
    ]
    headers = ["REFUND", "TENDER", "KIND", "METHOD", "AMOUNT", "STATUS", "DETAIL"]
    return _table(headers, rows, right={4})


def _refund_detail(line: RefundLine) -> str:
    parts = []
    if line.bank_account is not None:  # a reference and the masked number only
        parts.append(f"to {line.bank_account.bank} {line.bank_account.masked_number}")
    if line.provider_reference:
        parts.append(f"provider {line.provider_reference}")
    if line.confirmation_reference:
        parts.append(f"confirmed {line.confirmation_reference}")
    if line.failure:
        parts.append(f"failed: {line.failure}")
    return "; ".join(parts)


def _history_lines(view: CancellationView) -> list[str]:
    if not view.history:
        return []
    shown = view.history[-HISTORY_LINES:]
    title = (
        "history:"
        if len(shown) == len(view.history)
        else (f"history (last {len(shown)} of {len(view.history)}):")
    )
    rows = [
        [_time(entry.at), entry.event, entry.actor, _detail_text(entry.detail)] for entry in shown
    ]
    return [title, *_table(["AT", "EVENT", "ACTOR", "DETAIL"], rows)]


def _detail_text(detail: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={value if isinstance(value, str | int | float) else json.dumps(value)}"
        for key, value in detail.items()
        if value is not None
    )


def _listing_lines(listing: Listing) -> list[str]:
    if not listing.items:
        return ["no cancellations"]
    headers = ["CANCELLATION", "ORDER", "STATUS", "ORDER STATUS", "BY"]
    headers += ["REFUNDABLE", "REFUNDED", "ATTENTION"]
    rows = [
        [
            v.cancellation_id,
            v.order_id,
            v.status,
            v.order_status or "-",
            v.initiated_by,
            str(v.refundable or "-"),
            str(v.refunded or "-"),
            v.needs_attention or "",
        ]
        for v in listing.items
    ]
    lines = _table(headers, rows, right={5, 6}, indent="")
    if listing.next_cursor:
        lines.append(f"more: --cursor {shlex.quote(listing.next_cursor)}")
    return lines


def _quote_lines(quote: Quote) -> list[str]:
    lines = [f"refundable: {format_money(quote.refundable, quote.currency)}"]
    if not quote.lines:
        return [*lines, "nothing to refund"]
    rows = [
        [line.tender_id, line.tender_kind, line.method, format_money(line.amount, quote.currency)]
        for line in quote.lines
    ]
    return lines + _table(["TENDER", "KIND", "METHOD", "AMOUNT"], rows, right={3})


def _load_report_lines(report: LoadReport) -> list[str]:
    lines = [f"loaded {report.file}"]
    for shop_id, shop in report.shops.items():
        settings = "settings, " if shop.settings else ""
        lines.append(
            f"shop {shop_id}: {settings}{shop.stock} SKU(s) stocked,"
            f" {shop.customers} customer(s), {len(shop.orders)} order(s),"
            f" {len(shop.payments)} card payment(s)"
        )
        rows = [
            [order_id, result, _payments_of(shop, order_id)]
            for order_id, result in shop.orders.items()
        ]
        if rows:
            lines += _table(["ORDER", "RESULT", "PAYMENTS"], rows)
    return lines


def _payments_of(shop: ShopLoaded, order_id: str) -> str:
    prefix = f"{order_id}/"
    return ", ".join(
        f"{key.removeprefix(prefix)}={pid}"
        for key, pid in shop.payments.items()
        if key.startswith(prefix)
    )


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: set[int] | None = None,
    indent: str = "  ",
) -> list[str]:
    """Columns padded to their widest cell; ``right`` holds the right-aligned columns."""
    right = right or set()
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return (indent + "  ".join(padded)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _quoted(reason: str) -> str:
    return f' "{reason}"' if reason else ""


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _bulk_job_lines(job: BulkJob) -> list[str]:
    c = job.counts
    stopping = "  (stop requested)" if job.stop_requested and job.status == "running" else ""
    return [
        f"bulk cancellation {job.bulk_id} of {job.sku}: {job.status}{stopping}",
        f"matched {c.matched}: started {c.started}, already open {c.already_open},"
        f" refused {c.refused}",
        f"workflow: {job.workflow_id}",
    ]


def _dry_run_lines(dry: BulkDryRun) -> list[str]:
    c = dry.counts
    lines = [
        f"dry run for {dry.sku}: nothing was started",
        f"matched {c.matched}: would start {c.started}, already open {c.already_open},"
        f" refused {c.refused}",
    ]
    rows = []
    for order in dry.orders:
        if order.error is not None:
            what = f"{order.error.code}: {order.error.message}"
        elif order.cancellation_id is not None:
            what = f"open: {order.cancellation_id}"
        else:
            plan = ", ".join(
                f"{line.tender_kind} {format_money(line.amount, order.currency or '')}"
                for line in order.lines
            )
            what = f"{_items_text(order.items) if order.items else 'whole order'}; {plan or '-'}"
        rows.append([order.order_id, order.outcome.value, what])
    if rows:
        lines += _table(["ORDER", "OUTCOME", "ITEMS AND REFUNDS"], rows)
    if dry.truncated:
        lines.append(f"(only the first {len(dry.orders)} orders are listed)")
    return lines
