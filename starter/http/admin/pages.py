"""The admin pages: Cancellations, the cancellation, Order details, the shop's settings.

Every page but sign-in goes through :class:`PageRoute`: without a valid session it
redirects to sign-in; a POST must carry the session's CSRF token; the shop is the
session's, never the URL's, so another shop's cancellation or order is simply not found
(``404``), and its data is never read. Failures render the page again with the error as
a sentence (:data:`~starter.http.admin.words.ERROR_SENTENCES`); nothing is a ``500``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from domain.bulk import BulkRequest
from domain.cancellation import (
    Action,
    Attention,
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    ReasonCode,
    RefundLine,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.money import format_money
from domain.order import Order
from domain.refund_plan import RefundChannel, RefundMethod, refund_channel
from domain.requests import (
    ConfirmRefundRequest,
    Quote,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    StartRequest,
    UndoRequest,
)
from starter.bulk import BulkClient
from starter.client import CancellationClient
from starter.config import Settings
from starter.http.admin import forms
from starter.http.admin.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    BadSession,
    Session,
    SessionSigner,
    same_token,
    valid_name,
)
from starter.http.admin.words import (
    ATTENTION_LABELS,
    ERROR_SENTENCES,
    FORM_EXPIRED,
    MERCHANT_REASONS,
    METHOD_LABELS,
    NOTICES,
    ORDER_STATUS_LABELS,
    REASON_LABELS,
    REFUND_STATUS_LABELS,
    STATUS_LABELS,
    TENDER_LABELS,
    age,
    event_label,
    list_label,
    refund_as,
)
from starter.http.auth import Authenticator
from starter.http.context import Hook
from starter.http.errors import HTTP_STATUS, as_cancellation_error, validation_message
from starter.http.models import SettingsDocument, rfc3339_duration
from starter.http.params import CancellationId, OrderId, RefundId

log = logging.getLogger("starter.http.admin")

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# Scripts and styles only from the hook itself: an injected <script> or inline handler
# never runs, even if escaping were ever missed.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Cancellation and order ids are in the URLs; other sites needn't learn them.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
# The needs-attention filter reads this many list pages at most per screen (the client
# lists by status only); a shop with more runs than that sees "More" to read further.
ATTENTION_SCAN_PAGES: Final = 10
ATTENTION_SCAN_PAGE_SIZE: Final = 50
# While refunds run by themselves, the cancellation page reloads itself (no JavaScript).
REFRESH_SECONDS: Final = 3


@dataclass(frozen=True)
class Admin:
    """What the pages need beyond the hook: the cookie signer, templates and flags."""

    signer: SessionSigner
    templates: jinja2.Environment
    secure_cookies: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Admin:
        """Built once by :func:`starter.http.admin.install`."""
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            # Every value is escaped unless a template says otherwise (none does).
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.globals.update(
            status_labels=STATUS_LABELS,
            order_status_labels=ORDER_STATUS_LABELS,
            reason_labels=REASON_LABELS,
            method_labels=METHOD_LABELS,
            tender_labels=TENDER_LABELS,
            refund_status_labels=REFUND_STATUS_LABELS,
            attention_labels=ATTENTION_LABELS,
            list_label=list_label,
            refund_as=refund_as,
            # One idempotency key per rendered form: sent twice, it acts once; two forms of
            # one page never share a key (Temporal would answer the second with the first).
            new_key=forms.new_key,
            event_label=event_label,
            money=format_money,
            statuses=list(CancellationStatus),
            reason_codes=list(ReasonCode),
            merchant_reasons=MERCHANT_REASONS,
            methods=list(RefundMethod),
        )
        return cls(
            signer=SessionSigner(settings.admin_session_key),
            templates=env,
            secure_cookies=settings.admin_cookie_secure,
        )


def _admin(request: Request) -> Admin:
    admin: Admin = request.app.state.admin
    return admin


def _client(request: Request) -> CancellationClient:
    hook: Hook = request.app.state.hook
    return hook.client


def _session(request: Request) -> Session:
    session: Session = request.state.admin_session
    return session


def render(
    request: Request,
    template: str,
    status: int = 200,
    *,
    error: CancellationError | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page with the signed-in merchant, the CSRF token and an error sentence if any."""
    session: Session | None = getattr(request.state, "admin_session", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    sign_in_csrf = context.pop("csrf", "")
    html = (
        _admin(request)
        .templates.get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session else sign_in_csrf,
            notice=notice,
            error=_error_sentence(error) if error else None,
            error_detail=error.message if error else None,
            path=request.url.path,
            **context,
        )
    )
    if error is not None and status == 200:
        status = HTTP_STATUS.get(error.code, 409)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _error_sentence(error: CancellationError) -> str:
    return ERROR_SENTENCES.get(error.code, error.message)


def redirect(url: str) -> RedirectResponse:
    """See other (303): the browser GETs the page after a POST, so reload never re-posts."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _url(path: str, **query: str) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def cancellation_url(cancellation_id: str, suffix: str = "") -> str:
    """The cancellation page (ids are path-safe: letters, digits and ``_.:-~``)."""
    return f"/admin/cancellations/{quote(cancellation_id, safe='')}{suffix}"


def order_url(order_id: str) -> str:
    """The Order details page."""
    return f"/admin/orders/{quote(order_id, safe='')}"


# ---------------------------------------------------------------------- the route class


class PageRoute(APIRoute):
    """A page of a signed-in merchant: session first, CSRF for POSTs, errors as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            admin = _admin(request)
            try:
                session = admin.signer.session(request.cookies.get(SESSION_COOKIE))
            except BadSession:
                target = request.url.path if request.method == "GET" else "/admin/cancellations"
                return redirect(_url("/admin/sign-in", next=target))
            request.state.admin_session = session
            if request.method == "POST":
                form = await request.form()
                if not same_token(forms.text(form, "csrf_token") or None, session.csrf):
                    log.warning(
                        "admin: %s %s without its CSRF token", request.method, request.url.path
                    )
                    return render(request, "error.html", 403, message=FORM_EXPIRED)
            try:
                return await handler(request)
            except RequestValidationError as err:
                failure = CancellationError(
                    ErrorCode.VALIDATION_ERROR, validation_message(err.errors())
                )
            except Exception as err:
                known = as_cancellation_error(err)
                if known is None:
                    raise
                failure = known
            return render(request, "error.html", error=failure, message=None)

        return page


router = APIRouter(route_class=PageRoute, include_in_schema=False)
public = APIRouter(include_in_schema=False)


# ---------------------------------------------------------------------- signing in and out


@public.get("/admin")
async def home() -> RedirectResponse:
    """The admin starts at Cancellations (which sends a stranger to sign-in)."""
    return redirect("/admin/cancellations")


@public.get("/admin/sign-in")
async def sign_in_form(request: Request, next: str = "/admin/cancellations") -> HTMLResponse:
    """The sign-in form, with its own CSRF token in a short-lived cookie."""
    cookie, csrf = _admin(request).signer.new_sign_in()
    response = render(request, "sign_in.html", csrf=csrf, next=_local(next), message=None)
    _set_cookie(request, response, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS)
    return response


@public.post("/admin/sign-in")
async def sign_in(request: Request) -> Response:
    """Check the shop token once; the session then carries the shop and the name."""
    admin = _admin(request)
    form = await request.form()
    next_url = _local(forms.text(form, "next"))
    try:
        expected = admin.signer.sign_in_csrf(request.cookies.get(SIGN_IN_COOKIE))
    except BadSession:
        expected = None
    if expected is None or not same_token(forms.text(form, "csrf_token") or None, expected):
        return _sign_in_again(request, next_url, FORM_EXPIRED, 403)
    name = forms.text(form, "name")
    if not valid_name(name):
        return _sign_in_again(
            request,
            next_url,
            "Enter your name as letters, digits and . _ @ + : - (no spaces), up to 100.",
            422,
        )
    authenticator: Authenticator = request.app.state.authenticator
    try:
        shop = await authenticator.shop_for(f"Bearer {forms.text(form, 'token')}")
    except Exception as err:  # a wrong token, or the token table's database is away
        known = as_cancellation_error(err)
        if known is None:
            raise
        return _sign_in_again(request, next_url, _error_sentence(known), HTTP_STATUS[known.code])
    log.info("admin: %s signed in to shop %s", name, shop)
    response = redirect(next_url)
    _set_cookie(
        request, response, SESSION_COOKIE, admin.signer.new_session(shop, name), SESSION_SECONDS
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


def _sign_in_again(request: Request, next_url: str, message: str, status: int) -> HTMLResponse:
    cookie, csrf = _admin(request).signer.new_sign_in()
    response = render(request, "sign_in.html", status, csrf=csrf, next=next_url, message=message)
    _set_cookie(request, response, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_admin(request).secure_cookies,
    )


def _local(url: str) -> str:
    """Only our own pages as a place to go after sign-in: never another site."""
    safe = url.startswith("/admin/") and "//" not in url and "\\" not in url and len(url) < 500
    return url if safe and not url.startswith("/admin/sign-in") else "/admin/cancellations"


@router.post("/admin/sign-out")
async def sign_out(request: Request) -> Response:
    """Forget the session in this browser."""
    response = redirect(_url("/admin/sign-in"))
    response.delete_cookie(
        SESSION_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_admin(request).secure_cookies,
    )
    return response


# ---------------------------------------------------------------------- Cancellations


@router.get("/admin/cancellations")
async def cancellations(
    request: Request,
    status: Annotated[str, Query(max_length=40)] = "",
    attention: Annotated[str, Query(max_length=5)] = "",
    cursor: Annotated[str, Query(max_length=400)] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> Response:
    """Orders › Cancellations: newest first, filtered by status and needs-attention."""
    session = _session(request)
    client = _client(request)
    statuses = None
    if status:
        try:
            statuses = [CancellationStatus(status)]
        except ValueError:
            raise CancellationError(ErrorCode.VALIDATION_ERROR, "status: not a status") from None
    needs_attention = attention == "1"
    position = _decode_cursor(cursor) if cursor else None
    if not needs_attention:
        page = await client.list_cancellations(
            session.shop_id, statuses=statuses, limit=limit, cursor=position
        )
        items, next_position = page.items, page.next_cursor
    else:
        items, next_position = [], position
        for _ in range(ATTENTION_SCAN_PAGES):
            page = await client.list_cancellations(
                session.shop_id,
                statuses=statuses,
                limit=ATTENTION_SCAN_PAGE_SIZE,
                cursor=next_position,
            )
            items += [v for v in page.items if _needs_attention(v)]
            next_position = page.next_cursor
            if next_position is None or len(items) >= limit:
                break
    now = datetime.now(UTC)
    rows = [
        {
            "view": view,
            "amount": await _amount(client, session.shop_id, view),
            "age": age(view.created_at, now),
            "url": cancellation_url(view.cancellation_id),
        }
        for view in items
    ]
    next_url = None
    if next_position is not None:
        query = {
            "status": status,
            "attention": attention,
            "limit": str(limit) if limit != PAGE_SIZE else "",
            "cursor": _encode_cursor(next_position),
        }
        next_url = _url("/admin/cancellations", **{k: v for k, v in query.items() if v})
    return render(
        request,
        "cancellations.html",
        rows=rows,
        chosen_status=status,
        attention=needs_attention,
        next_url=next_url,
        first_page=not cursor,
    )


async def _amount(client: CancellationClient, shop_id: str, view: CancellationView) -> str:
    """What the cancellation refunds; before acceptance, what accepting it would refund."""
    if view.refundable is not None:
        return format_money(view.refundable.amount, view.refundable.currency)
    if view.status is not CancellationStatus.REQUESTED:
        return ""
    try:
        quote_ = await client.quote(shop_id, view.order_id, RefundMethod.ORIGINAL, view.items)
    except CancellationError:  # the order changed under the request: the page shows why
        return ""
    return format_money(quote_.refundable, quote_.currency)


def _needs_attention(view: CancellationView) -> bool:
    return view.needs_attention is not None and view.needs_attention is not Attention.NONE


# The client's cursor ("<time>|<id>") travels in the URL opaque and URL-safe.


def _encode_cursor(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        decoded = ""
    if not decoded:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, "cursor: not a page of this list")
    return decoded


# ---------------------------------------------------------------------- the cancellation


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
            session.shop_id,
            None,
            body,
            cancellation_id=view.cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
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
            session.shop_id,
            None,
            body,
            cancellation_id=cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
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
            session.shop_id,
            None,
            refund_id,
            body,
            cancellation_id=cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
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
            session.shop_id,
            None,
            refund_id,
            body,
            cancellation_id=cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
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
            session.shop_id,
            None,
            body,
            cancellation_id=cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
        )

    return await _act(request, cancellation_id, "repayment", "repaid", act)


Act = Callable[[CancellationClient, Session, FormData], Coroutine[Any, Any, None]]


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
            session.shop_id,
            None,
            body,
            cancellation_id=cancellation_id,
            idempotency_key=forms.key_of(form),
            actor=session.actor,
        )
    except CancellationError as err:
        if err.code in (ErrorCode.CANCELLATION_NOT_FOUND, ErrorCode.FORBIDDEN):
            raise
        if err.code is ErrorCode.RECAPTURE_UNAVAILABLE:
            values["require_repayment"] = True
        return await _undo_page(request, cancellation_id, error=err, values=values)
    return redirect(_url(cancellation_url(cancellation_id), notice="undo"))


# ---------------------------------------------------------------------- Order details


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


def _human_duration(value: timedelta) -> str:
    """``7 days``, ``1 day 12 hours``, ``30 minutes``: a window as a merchant reads it."""
    seconds = int(value.total_seconds())
    parts = []
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "no time"
