"""Cancellation routes: start, read, quote, and the merchant's and customer's actions.

Each action exists twice: under ``/v1/shops/{shop_id}/orders/{order_id}/cancellation``
(the order's latest cancellation) and under
``/v1/shops/{shop_id}/cancellations/{cancellation_id}`` (any one of them). Both call the
same :class:`~starter.client.CancellationClient` method; the client sends actions as
Temporal updates, with the ``Idempotency-Key`` as the update id.

Rule numbers are those of ``docs/rules.md``.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import JSONResponse

from domain.cancellation import CancellationStatus, CancellationView, InitiatedBy
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    Quote,
    QuoteRequest,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    StartRequest,
    UndoRequest,
)
from starter import cursors
from starter.client import CancellationClient
from starter.http.auth import PrincipalDep, ShopRoute
from starter.http.context import HookDep
from starter.http.errors import error_responses
from starter.http.idempotency import Write, WriteDep
from starter.http.models import CancellationPage
from starter.http.params import CancellationId, OrderId, RefundId, ShopId

BY_ORDER = "/v1/shops/{shop_id}/orders/{order_id}/cancellation"
BY_ID = "/v1/shops/{shop_id}/cancellations/{cancellation_id}"

# List pages: large enough for an admin screen, small enough to answer fast.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


READ_ERRORS = error_responses(401, 403, 404, 422, 503)
ACTION_ERRORS = error_responses(401, 403, 404, 409, 422, 503)

router = APIRouter(route_class=ShopRoute)


@dataclass(frozen=True)
class Target:
    """The cancellation a route addresses: an order's latest, or one by id."""

    shop_id: str
    order_id: str | None = None
    cancellation_id: str | None = None


def by_order(shop_id: ShopId, order_id: OrderId) -> Target:
    """The order's latest cancellation."""
    return Target(shop_id=shop_id, order_id=order_id)


def by_id(shop_id: ShopId, cancellation_id: CancellationId) -> Target:
    """One cancellation, named by its id."""
    return Target(shop_id=shop_id, cancellation_id=cancellation_id)


def _view(view: CancellationView, status: int = 200) -> tuple[int, Any]:
    return status, view.model_dump(mode="json")


@dataclass(frozen=True)
class _Action:
    """One action request: answered once per idempotency key, then replayed."""

    target: Target
    write: Write

    @property
    def client(self) -> CancellationClient:
        return self.write.hook.client

    def addressing(self, actor: str | None = None) -> dict[str, Any]:
        """The client's keyword arguments naming the cancellation, the key and the actor."""
        return {
            "cancellation_id": self.target.cancellation_id,
            "idempotency_key": self.write.key,
            "actor": actor or self.write.caller.actor,
        }

    async def run(
        self, body: BaseModel | None, call: Callable[[], Awaitable[CancellationView]]
    ) -> JSONResponse:
        """Perform ``call`` unless this key was answered before (same body: same answer)."""

        async def act() -> tuple[int, Any]:
            return _view(await call())

        return await self.write.once(body.model_dump(mode="json") if body is not None else {}, act)


# ---------------------------------------------------------------------- starting and lists


@router.post(
    BY_ORDER,
    status_code=201,
    response_model=CancellationView,
    responses={
        200: {"model": CancellationView, "description": "An open cancellation already existed"},
        **ACTION_ERRORS,
    },
    tags=["cancellations"],
    summary="Start a cancellation (a customer's request, or the merchant's accepted one)",
)
async def start_cancellation(
    write: WriteDep,
    shop_id: ShopId,
    order_id: OrderId,
    body: StartRequest,
) -> JSONResponse:
    """``201`` with the new cancellation, ``200`` with the open one (rule 3).

    A customer's request is recorded as the customer's (``customer:<id>``); a merchant's
    start as the calling merchant.
    """
    actor = write.caller.actor if body.initiated_by is InitiatedBy.MERCHANT else None

    async def act() -> tuple[int, Any]:
        view, created = await write.hook.client.start_cancellation(
            shop_id, order_id, body, actor=actor, idempotency_key=write.key
        )
        return _view(view, 201 if created else 200)

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    "/v1/shops/{shop_id}/orders/{order_id}/cancellations",
    responses=READ_ERRORS,
    tags=["cancellations"],
    summary="All cancellations of an order, latest first",
)
async def order_cancellations(
    shop_id: ShopId, order_id: OrderId, hook: HookDep, caller: PrincipalDep
) -> CancellationPage:
    """Every cancellation of the order (one page: an order has few)."""
    return CancellationPage(items=await hook.client.cancellations_of_order(shop_id, order_id))


@router.get(
    "/v1/shops/{shop_id}/cancellations",
    responses=error_responses(401, 403, 422, 503),
    tags=["cancellations"],
    summary="The shop's cancellations, newest first, from the database",
)
async def list_cancellations(
    shop_id: ShopId,
    hook: HookDep,
    caller: PrincipalDep,
    status: Annotated[
        list[CancellationStatus] | None,
        Query(description="Only these statuses (repeat the parameter for several)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=300, description="`next_cursor` of a page.")
    ] = None,
) -> CancellationPage:
    """A page of the list; pass ``next_cursor`` back as ``cursor`` for the next one."""
    page = await hook.client.list_cancellations(
        shop_id, statuses=status, limit=limit, cursor=_client_cursor(cursor)
    )
    return CancellationPage(items=page.items, next_cursor=_http_cursor(page.next_cursor))


# The client's cursor is a timestamp and an id ("…+00:00|cancellation-…"); on the wire it is
# opaque and URL-safe, so it can be pasted into a query string as it is.


def _http_cursor(cursor: str | None) -> str | None:
    return None if cursor is None else cursors.wrap(cursor)


def _client_cursor(cursor: str | None) -> str | None:
    return None if cursor is None else cursors.unwrap(cursor)


# ---------------------------------------------------------------------- one cancellation


def _add_cancellation_routes(prefix: str, target_of: Callable[..., Target], tag: str) -> None:
    """Read, quote and act on the cancellation that ``target_of`` names."""

    @router.get(prefix, responses=READ_ERRORS, tags=[tag], summary="The cancellation view")
    async def get_cancellation(
        target: Annotated[Target, Depends(target_of)], hook: HookDep, caller: PrincipalDep
    ) -> CancellationView:
        return await hook.client.get_cancellation(
            target.shop_id, target.order_id, target.cancellation_id
        )

    @router.post(
        f"{prefix}/quote",
        responses=READ_ERRORS | error_responses(409),
        tags=[tag],
        summary="The refund plan an acceptance would produce; changes nothing",
    )
    async def quote(
        target: Annotated[Target, Depends(target_of)],
        body: QuoteRequest,
        hook: HookDep,
        caller: PrincipalDep,
    ) -> Quote:
        order_id = target.order_id
        if order_id is None:
            view = await hook.client.get_cancellation(
                target.shop_id, cancellation_id=target.cancellation_id
            )
            order_id = view.order_id
        return await hook.client.quote(target.shop_id, order_id, body.refund_method, body.items)

    @router.post(
        f"{prefix}/accept",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="The merchant accepts, with a reason and a refund method",
    )
    async def accept(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        body: AcceptRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.accept(
                target.shop_id, target.order_id, body, **action.addressing()
            ),
        )

    @router.post(
        f"{prefix}/reject",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="The merchant rejects the customer's request",
    )
    async def reject(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        body: RejectRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.reject(
                target.shop_id, target.order_id, body, **action.addressing()
            ),
        )

    @router.post(
        f"{prefix}/withdraw",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="The customer takes the request back (recorded as the customer's action)",
    )
    async def withdraw(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
    ) -> JSONResponse:
        # The backend service relays the customer's click, so the audit trail says customer.
        action = _Action(target, write)
        return await action.run(
            None,
            lambda: action.client.withdraw(
                target.shop_id, target.order_id, **action.addressing(actor="customer")
            ),
        )

    @router.post(
        f"{prefix}/refunds/{{refund_id}}/confirm",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="The merchant made the manual bank deposit of a refund line",
    )
    async def confirm_refund(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        refund_id: RefundId,
        body: ConfirmRefundRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.confirm_refund(
                target.shop_id, target.order_id, refund_id, body, **action.addressing()
            ),
        )

    @router.post(
        f"{prefix}/refunds/{{refund_id}}/retry",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="Retry a failed refund line, or switch it to bank deposit or credits",
    )
    async def retry_refund(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        refund_id: RefundId,
        body: RetryRefundRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.retry_refund(
                target.shop_id, target.order_id, refund_id, body, **action.addressing()
            ),
        )

    @router.post(
        f"{prefix}/undo",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="Undo the cancellation: recapture checked first, the store never poorer",
    )
    async def undo(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        body: UndoRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.undo(
                target.shop_id, target.order_id, body, **action.addressing()
            ),
        )

    @router.post(
        f"{prefix}/repayment",
        response_model=CancellationView,
        responses=ACTION_ERRORS,
        tags=[tag],
        summary="The customer paid again after an undo",
    )
    async def repayment(
        write: WriteDep,
        target: Annotated[Target, Depends(target_of)],
        body: RepaymentRequest,
    ) -> JSONResponse:
        action = _Action(target, write)
        return await action.run(
            body,
            lambda: action.client.confirm_repayment(
                target.shop_id, target.order_id, body, **action.addressing()
            ),
        )


_add_cancellation_routes(BY_ORDER, by_order, "cancellations (by order)")
_add_cancellation_routes(BY_ID, by_id, "cancellations (by id)")
