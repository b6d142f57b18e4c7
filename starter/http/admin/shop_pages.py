"""The shop's pages: Order details with Cancel, Settings, and Sold out › Cancel by SKU.
Routes register on :data:`~starter.http.admin.pages.router`."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query, Request
from starlette.responses import HTMLResponse, Response

from domain.bulk import BulkRequest
from domain.cancellation import (
    Channel,
    InitiatedBy,
    ReasonCode,
)
from domain.errors import CancellationError, ErrorCode
from domain.refund_plan import RefundMethod
from domain.requests import (
    StartRequest,
)
from starter.bulk import BulkClient
from starter.http.admin import forms
from starter.http.admin.cancellation_pages import _accept_values, _require_bank_account
from starter.http.admin.pages import (
    _client,
    _session,
    _url,
    cancellation_url,
    order_url,
    redirect,
    render,
    router,
)
from starter.http.admin.words import (
    ERROR_SENTENCES,
)
from starter.http.context import Hook
from starter.http.models import SettingsDocument, rfc3339_duration
from starter.http.params import OrderId


@router.get("/admin/orders")
async def find_order(
    request: Request, order_id: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    """Orders › All orders: open an order by its number."""
    if order_id:
        return redirect(order_url(order_id))
    return render(request, "find_order.html")


@router.get("/admin/orders/{order_id}")
async def order_details(request: Request, order_id: OrderId) -> Response:
    """Order details: the order, its tenders, what was canceled, and Cancel."""
    return await _order_page(request, order_id)


async def _order_page(
    request: Request,
    order_id: str,
    *,
    error: CancellationError | None = None,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    session = _session(request)
    client = _client(request)
    order = await client.get_order(session.shop_id, order_id)
    history = await client.cancellations_of_order(session.shop_id, order_id)
    items: list[dict[str, Any]] = [
        {
            "item": item,
            "canceled": order.canceled_quantities.get(item.item_id, 0),
            "remaining": item.quantity - order.canceled_quantities.get(item.item_id, 0),
        }
        for item in order.items
    ]
    defaults: dict[str, Any] = {
        "scope": "whole",
        "reason_code": ReasonCode.SOLD_OUT.value,
        "reason": "",
        "customer_note": "",
        "refund_method": RefundMethod.ORIGINAL.value,
        "bank": "",
        "account_number": "",
        "holder": "",
        "restock": True,
        "notify_customer": True,
        "quantities": {},
    }
    return render(
        request,
        "order.html",
        error=error,
        order=order,
        items=items,
        shipped=ERROR_SENTENCES[ErrorCode.ORDER_SHIPPED] if order.is_shipped else None,
        cancelable=not order.is_shipped and any(row["remaining"] > 0 for row in items),
        cancellations=[(view, cancellation_url(view.cancellation_id)) for view in history],
        values=values or defaults,
        url=order_url(order_id),
    )


@router.post("/admin/orders/{order_id}/cancel")
async def cancel_order(request: Request, order_id: OrderId) -> Response:
    """Cancel from Order details: review the refund quote, then start it accepted."""
    session = _session(request)
    client = _client(request)
    form = await request.form()
    order = await client.get_order(session.shop_id, order_id)
    values = _accept_values(form)
    values["scope"] = "items" if forms.text(form, "scope") == "items" else "whole"
    values["quantities"] = {
        item.item_id: forms.text(form, f"qty-{item.item_id}") for item in order.items
    }
    try:
        if order.is_shipped:  # rule 1, said before the merchant fills in a refund
            raise CancellationError(ErrorCode.ORDER_SHIPPED, f"order {order_id} has shipped")
        items = forms.chosen_items(form, order)
        body = forms.accept_request(form)
        quote_ = await client.quote(session.shop_id, order_id, body.refund_method, items)
        _require_bank_account(quote_, body.bank_account is not None)
        if forms.text(form, "step") != "confirm":
            return render(
                request,
                "cancel_review.html",
                order=order,
                values=values,
                quote=quote_,
                body=body,
                items=items,
                url=order_url(order_id),
            )
        contact = body.reason_code is ReasonCode.CUSTOMER_CONTACT
        start: StartRequest = forms.parse(
            StartRequest,
            {
                "initiated_by": InitiatedBy.MERCHANT,
                "channel": Channel.CONTACT if contact else Channel.ADMIN,
                "reason_code": body.reason_code,
                "reason": body.reason,
                "items": items,
                "accept": body,
            },
        )
        view, created = await client.start_cancellation(
            session.shop_id, order_id, start, actor=session.actor
        )
    except CancellationError as err:
        if err.code is ErrorCode.ORDER_NOT_FOUND:
            raise
        return await _order_page(request, order_id, error=err, values=values)
    return redirect(
        _url(cancellation_url(view.cancellation_id), notice="started" if created else "exists")
    )


# ---------------------------------------------------------------------- settings


@router.get("/admin/settings")
async def settings_page(request: Request) -> Response:
    """The shop's settings: customer requests on or off, and the windows."""
    session = _session(request)
    settings = await _client(request).get_settings(session.shop_id)
    values = {
        "customer_cancellation_requests": settings.customer_cancellation_requests,
        "request_reminder_after": rfc3339_duration(settings.request_reminder_after),
        "undo_window": rfc3339_duration(settings.undo_window),
        "repayment_window": rfc3339_duration(settings.repayment_window),
    }
    return render(request, "settings.html", values=values)


@router.post("/admin/settings")
async def save_settings(request: Request) -> Response:
    """Replace the shop's settings."""
    session = _session(request)
    form = await request.form()
    values: dict[str, Any] = {
        "customer_cancellation_requests": forms.checked(form, "customer_cancellation_requests"),
        "request_reminder_after": forms.text(form, "request_reminder_after"),
        "undo_window": forms.text(form, "undo_window"),
        "repayment_window": forms.text(form, "repayment_window"),
    }
    try:
        document: SettingsDocument = forms.parse(SettingsDocument, values)
        await _client(request).put_settings(session.shop_id, document)
    except CancellationError as err:
        return render(request, "settings.html", error=err, values=values)
    return redirect(_url("/admin/settings", notice="settings"))


# -- sold out: one bulk cancellation for a SKU -------------------------------------------------


def _bulk_client(request: Request) -> BulkClient:
    hook: Hook = request.app.state.hook
    return BulkClient(hook.client, task_queue=hook.settings.task_queue)


def _bulk_values(form: Any) -> dict[str, Any]:
    return {
        "sku": forms.text(form, "sku"),
        "reason_code": forms.text(form, "reason_code") or ReasonCode.SOLD_OUT.value,
        "reason": forms.text(form, "reason"),
        "refund_method": forms.text(form, "refund_method") or RefundMethod.ORIGINAL.value,
        "restock": forms.checked(form, "restock"),
        "notify_customer": forms.checked(form, "notify_customer"),
    }


@router.get("/admin/bulk")
async def bulk_page(request: Request) -> Response:
    """Sold out or defective: cancel every open order holding a SKU (a preview first)."""
    values = {
        "sku": "",
        "reason_code": "sold_out",
        "reason": "",
        "refund_method": "original",
        "restock": False,
        "notify_customer": True,
    }
    return render(request, "bulk.html", values=values, preview=None)


@router.post("/admin/bulk")
async def bulk_preview_or_start(request: Request) -> Response:
    """``step=preview``: the dry run, nothing started. ``step=confirm``: start the job."""
    session = _session(request)
    form = await request.form()
    values = _bulk_values(form)
    confirm = forms.text(form, "step") == "confirm"
    try:
        body: BulkRequest = forms.parse(BulkRequest, values | {"dry_run": not confirm})
        bulk = _bulk_client(request)
        if not confirm:
            preview = await bulk.dry_run(session.shop_id, body)
            return render(request, "bulk.html", values=values, preview=preview)
        job = await bulk.start(
            session.shop_id, body, actor=session.actor, idempotency_key=forms.key_of(form)
        )
    except CancellationError as err:
        return render(request, "bulk.html", error=err, values=values, preview=None)
    return redirect(f"/admin/bulk/{quote(job.bulk_id, safe='')}")


@router.get("/admin/bulk/{bulk_id}")
async def bulk_job_page(request: Request, bulk_id: str) -> Response:
    """A bulk cancellation's progress and each order's outcome."""
    session = _session(request)
    bulk = _bulk_client(request)
    try:
        job = await bulk.get(session.shop_id, bulk_id)
        items = await bulk.items(session.shop_id, bulk_id, limit=200)
    except CancellationError as err:
        return render(request, "error.html", 404, error=err)
    return render(request, "bulk_job.html", job=job, items=items)
