"""The cancellation's page and its actions: accept (quote first), reject, confirm a
deposit, retry or switch a refund, undo (the provider's recapture check first), confirm a
repayment. Routes register on :data:`~starter.http.admin.pages.router`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, Response

from domain.cancellation import (
    Action,
    CancellationStatus,
    CancellationView,
    RefundLine,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import Order
from domain.refund_plan import RefundChannel, RefundMethod, refund_channel
from domain.requests import (
    ConfirmRefundRequest,
    Quote,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    UndoRequest,
)
from starter.client import CancellationClient
from starter.http.admin import forms
from starter.http.admin.pages import (
    REFRESH_SECONDS,
    _amount,
    _client,
    _error_sentence,
    _human_duration,
    _session,
    _url,
    cancellation_url,
    order_url,
    redirect,
    render,
    router,
)
from starter.http.admin.session import (
    Session,
)
from starter.http.params import CancellationId, RefundId


@router.get("/admin/cancellations/{cancellation_id}")
async def cancellation(request: Request, cancellation_id: CancellationId) -> Response:
    """The cancellation: status, items, the refund plan per tender, history, actions."""
    return await _cancellation_page(request, cancellation_id)


async def _cancellation_page(
    request: Request,
    cancellation_id: str,
    *,
    error: CancellationError | None = None,
    failed_form: str | None = None,
) -> HTMLResponse:
    session = _session(request)
    client = _client(request)
    view = await client.get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    order = await client.get_order(session.shop_id, view.order_id)
    allowed = {action.value for action in view.allowed_actions}
    lines = [_line(view, line, allowed) for line in view.refunds]
    settled = all(not row["actions"] for row in lines)
    waiting_for_provider = (
        any(line.status in (RefundStatus.PENDING, RefundStatus.PROCESSING) for line in view.refunds)
        or view.status is CancellationStatus.UNDOING
    )
    currency = view.refundable.currency if view.refundable else order.currency
    return render(
        request,
        "cancellation.html",
        error=error,
        view=view,
        order=order,
        amount=await _amount(client, session.shop_id, view),
        items=_items_of(view, order),
        lines=lines,
        allowed=allowed,
        currency=currency,
        failed_form=failed_form,
        refresh=REFRESH_SECONDS if waiting_for_provider and settled and not error else None,
        url=cancellation_url(view.cancellation_id),
        order_url=order_url(view.order_id),
    )


def _items_of(view: CancellationView, order: Order) -> list[dict[str, Any]]:
    """The canceled items with their SKU and price (all of them for a whole-order one)."""
    by_id = {item.item_id: item for item in order.items}
    if view.items is None:
        return [{"item": item, "quantity": item.quantity} for item in order.items]
    return [
        {"item": by_id[c.item_id], "quantity": c.quantity} for c in view.items if c.item_id in by_id
    ]


def _line(view: CancellationView, line: RefundLine, allowed: set[str]) -> dict[str, Any]:
    actions: list[str] = []
    if line.status is RefundStatus.AWAITING_CONFIRMATION and "confirm_refund" in allowed:
        actions.append("confirm")
    if line.status is RefundStatus.FAILED and "retry_refund" in allowed:
        actions.append("retry")
    return {
        "line": line,
        "actions": actions,
        "confirm_url": cancellation_url(
            view.cancellation_id, f"/refunds/{quote(line.refund_id, safe='')}/confirm"
        ),
        "retry_url": cancellation_url(
            view.cancellation_id, f"/refunds/{quote(line.refund_id, safe='')}/retry"
        ),
    }


@router.get("/admin/cancellations/{cancellation_id}/accept")
async def accept_form(request: Request, cancellation_id: CancellationId) -> Response:
    """Accept cancellation request: reason, refund method, bank account, restock, notify."""
    session = _session(request)
    view = await _client(request).get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    if Action.ACCEPT not in view.allowed_actions:  # decided meanwhile: show what it is now
        return redirect(cancellation_url(view.cancellation_id))
    return render(
        request,
        "accept.html",
        view=view,
        values=_accept_defaults(view),
        url=cancellation_url(view.cancellation_id),
    )


def _accept_defaults(view: CancellationView) -> dict[str, Any]:
    return {
        "reason_code": view.reason_code.value if view.reason_code else "",
        "reason": "",
        "customer_note": "",
        "refund_method": RefundMethod.ORIGINAL.value,
        "bank": "",
        "account_number": "",
        "holder": "",
        "restock": True,
        "notify_customer": True,
    }


def _accept_values(form: FormData) -> dict[str, Any]:
    """The form's values as entered, to show them again (a review, or a correction)."""
    values: dict[str, Any] = {
        name: forms.text(form, name)
        for name in (
            "reason_code",
            "reason",
            "customer_note",
            "refund_method",
            "bank",
            "account_number",
            "holder",
        )
    }
    values["restock"] = forms.checked(form, "restock")
    values["notify_customer"] = forms.checked(form, "notify_customer")
    return values


@router.post("/admin/cancellations/{cancellation_id}/accept")
async def accept(request: Request, cancellation_id: CancellationId) -> Response:
    """First the review (the refund quote, nothing changed), then the acceptance itself."""
    session = _session(request)
    client = _client(request)
    form = await request.form()
    view = await client.get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    values = _accept_values(form)
    url = cancellation_url(view.cancellation_id)
    try:
        body = forms.accept_request(form)
        quote_ = await client.quote(session.shop_id, view.order_id, body.refund_method, view.items)
        _require_bank_account(quote_, body.bank_account is not None)
        if forms.text(form, "step") != "confirm":
            return render(
                request,
                "accept_review.html",
                view=view,
                values=values,
                quote=quote_,
                body=body,
                url=url,
            )
        await client.accept(
            session.shop_id, None, body, **_as_merchant(session, form, view.cancellation_id)
        )
    except CancellationError as err:
        return render(request, "accept.html", error=err, view=view, values=values, url=url)
    return redirect(_url(url, notice="accepted"))


@router.post("/admin/cancellations/{cancellation_id}/accept/edit")
async def accept_edit(request: Request, cancellation_id: CancellationId) -> Response:
    """Back from the review to the form, with what the merchant entered."""
    session = _session(request)
    view = await _client(request).get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    values = _accept_values(await request.form())
    return render(
        request, "accept.html", view=view, values=values, url=cancellation_url(view.cancellation_id)
    )


def _require_bank_account(quote_: Quote, given: bool) -> None:
    channels = {refund_channel(line.tender_kind, line.method) for line in quote_.lines}
    if not given and RefundChannel.BANK_DEPOSIT in channels:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            "part of this refund goes out by bank deposit: enter the customer's bank account",
        )


@router.post("/admin/cancellations/{cancellation_id}/reject")
async def reject(request: Request, cancellation_id: CancellationId) -> Response:
    """Reject the customer's request, with a reason."""

    async def act(client: CancellationClient, session: Session, form: FormData) -> None:
        body: RejectRequest = forms.parse(
            RejectRequest,
            {
                "reason": forms.text(form, "reason"),
                "customer_note": forms.optional_text(form, "customer_note"),
            },
        )
        await client.reject(
            session.shop_id, None, body, **_as_merchant(session, form, cancellation_id)
        )

    return await _act(request, cancellation_id, "reject", "rejected", act)


@router.post("/admin/cancellations/{cancellation_id}/refunds/{refund_id}/confirm")
async def confirm_refund(
    request: Request, cancellation_id: CancellationId, refund_id: RefundId
) -> Response:
    """Confirm bank deposit: the merchant made the transfer."""

    async def act(client: CancellationClient, session: Session, form: FormData) -> None:
        body: ConfirmRefundRequest = forms.parse(
            ConfirmRefundRequest, {"reference": forms.text(form, "reference")}
        )
        await client.confirm_refund(
            session.shop_id, None, refund_id, body, **_as_merchant(session, form, cancellation_id)
        )

    return await _act(request, cancellation_id, f"confirm-{refund_id}", "confirmed", act)


@router.post("/admin/cancellations/{cancellation_id}/refunds/{refund_id}/retry")
async def retry_refund(
    request: Request, cancellation_id: CancellationId, refund_id: RefundId
) -> Response:
    """Retry a failed refund as it was, or switch it to bank deposit or credits."""

    async def act(client: CancellationClient, session: Session, form: FormData) -> None:
        method = forms.text(form, "method") or None
        body: RetryRefundRequest = forms.parse(
            RetryRefundRequest,
            {
                "method": method,
                "bank_account": forms.bank_account(form) if method == "bank_deposit" else None,
            },
        )
        await client.retry_refund(
            session.shop_id, None, refund_id, body, **_as_merchant(session, form, cancellation_id)
        )

    form = await request.form()
    notice = "switched" if forms.text(form, "method") else "retried"
    return await _act(request, cancellation_id, f"retry-{refund_id}", notice, act)


@router.post("/admin/cancellations/{cancellation_id}/repayment")
async def repayment(request: Request, cancellation_id: CancellationId) -> Response:
    """Confirm repayment: the customer paid again after an undo."""

    async def act(client: CancellationClient, session: Session, form: FormData) -> None:
        raw = forms.text(form, "amount")
        body: RepaymentRequest = forms.parse(
            RepaymentRequest,
            {
                "reference": forms.text(form, "reference"),
                "amount": int(raw) if raw.isdigit() and len(raw) < 17 else raw,
            },
        )
        await client.confirm_repayment(
            session.shop_id, None, body, **_as_merchant(session, form, cancellation_id)
        )

    return await _act(request, cancellation_id, "repayment", "repaid", act)


Act = Callable[[CancellationClient, Session, FormData], Coroutine[Any, Any, None]]


def _as_merchant(session: Session, form: FormData, cancellation_id: str) -> dict[str, Any]:
    """The client's keyword arguments for a form's action: the cancellation, the form's
    idempotency key and the signed-in merchant as the actor."""
    return {
        "cancellation_id": cancellation_id,
        "idempotency_key": forms.key_of(form),
        "actor": session.actor,
    }


async def _act(
    request: Request, cancellation_id: str, form_name: str, notice: str, act: Act
) -> Response:
    """Run one action of the cancellation page; a refusal shows the page with its sentence."""
    session = _session(request)
    client = _client(request)
    form = await request.form()
    try:
        await act(client, session, form)
    except CancellationError as err:
        if err.code in (ErrorCode.CANCELLATION_NOT_FOUND, ErrorCode.FORBIDDEN):
            raise
        return await _cancellation_page(request, cancellation_id, error=err, failed_form=form_name)
    return redirect(_url(cancellation_url(cancellation_id), notice=notice))


# ---------------------------------------------------------------------- undo


@router.get("/admin/cancellations/{cancellation_id}/undo")
async def undo_form(request: Request, cancellation_id: CancellationId) -> Response:
    """Undo: what the undo will take back and what the customer must pay again."""
    session = _session(request)
    view = await _client(request).get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    if Action.UNDO not in view.allowed_actions:
        return redirect(cancellation_url(view.cancellation_id))
    return await _undo_page(request, cancellation_id)


async def _undo_page(
    request: Request,
    cancellation_id: str,
    *,
    error: CancellationError | None = None,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    session = _session(request)
    view = await _client(request).get_cancellation(session.shop_id, cancellation_id=cancellation_id)
    done = [line for line in view.refunds if line.status is RefundStatus.SUCCEEDED]
    provider = [line for line in done if line.channel is RefundChannel.PROVIDER]
    bank = [line for line in done if line.channel is RefundChannel.BANK_DEPOSIT]
    balances = [
        line for line in done if line.channel in (RefundChannel.POINTS, RefundChannel.CREDITS)
    ]
    open_lines = [
        line
        for line in view.refunds
        if line.status not in (RefundStatus.SUCCEEDED, RefundStatus.CANCELED, RefundStatus.FAILED)
    ]
    currency = view.refundable.currency if view.refundable else ""
    # The provider's check, before the merchant confirms (the undo asks again itself).
    checks: dict[str, Any] = {}
    check_failed = None
    if provider:
        try:
            previews = await _client(request).recapture_preview(
                session.shop_id, cancellation_id=cancellation_id
            )
            checks = {p.refund_id: p for p in previews}
        except CancellationError as err:
            check_failed = _error_sentence(err)
    lost = sum(p.amount for p in checks.values() if p.outcome != "restorable")
    settings = await _client(request).get_settings(session.shop_id)
    return render(
        request,
        "undo.html",
        checks=checks,
        check_failed=check_failed,
        repay_total=sum(line.amount for line in bank) + lost,
        repayment_window=_human_duration(settings.repayment_window),
        error=error,
        view=view,
        provider=provider,
        bank=bank,
        bank_total=sum(line.amount for line in bank),
        balances=balances,
        open_lines=open_lines,
        currency=currency,
        values=values or {"reason": "", "customer_note": "", "require_repayment": False},
        recapture_refused=error is not None and error.code is ErrorCode.RECAPTURE_UNAVAILABLE,
        url=cancellation_url(view.cancellation_id),
    )


@router.post("/admin/cancellations/{cancellation_id}/undo")
async def undo(request: Request, cancellation_id: CancellationId) -> Response:
    """Undo; where the provider can't recapture, the page offers to require repayment."""
    session = _session(request)
    form = await request.form()
    values = {
        "reason": forms.text(form, "reason"),
        "customer_note": forms.text(form, "customer_note"),
        "require_repayment": forms.checked(form, "require_repayment"),
    }
    try:
        body: UndoRequest = forms.parse(
            UndoRequest,
            {
                "reason": values["reason"],
                "customer_note": values["customer_note"] or None,
                "require_repayment": values["require_repayment"],
            },
        )
        await _client(request).undo(
            session.shop_id, None, body, **_as_merchant(session, form, cancellation_id)
        )
    except CancellationError as err:
        if err.code in (ErrorCode.CANCELLATION_NOT_FOUND, ErrorCode.FORBIDDEN):
            raise
        if err.code is ErrorCode.RECAPTURE_UNAVAILABLE:
            values["require_repayment"] = True
        return await _undo_page(request, cancellation_id, error=err, values=values)
    return redirect(_url(cancellation_url(cancellation_id), notice="undo"))


# ---------------------------------------------------------------------- Order details
