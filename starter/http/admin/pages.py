"""The admin pages: Cancellations, the cancellation, Order details, the shop's settings.

Every page but sign-in goes through :class:`PageRoute`: without a valid session it
redirects to sign-in; a POST must carry the session's CSRF token; the shop is the
session's, never the URL's, so another shop's cancellation or order is simply not found
(``404``), and its data is never read. Failures render the page again with the error as
a sentence (:data:`~starter.http.admin.words.ERROR_SENTENCES`); nothing is a ``500``.
"""

from __future__ import annotations

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
from starlette.responses import HTMLResponse, RedirectResponse, Response

from domain.cancellation import (
    Attention,
    CancellationStatus,
    CancellationView,
    ReasonCode,
)
from domain.errors import CancellationError, ErrorCode
from domain.money import format_money
from domain.refund_plan import RefundMethod
from starter import cursors
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
    position = cursors.unwrap(cursor) if cursor else None
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
            "cursor": cursors.wrap(next_position),
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


# ---------------------------------------------------------------------- the cancellation


def _human_duration(value: timedelta) -> str:
    """``7 days``, ``1 day 12 hours``, ``30 minutes``: a window as a merchant reads it."""
    seconds = int(value.total_seconds())
    parts = []
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "no time"
