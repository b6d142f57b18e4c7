"""Routes for backend services: orders, fulfillment, shop settings, stock, balances.

Reads of stock and balances answer zero for what the shop never recorded: the store
treats a SKU without a stock row as none available, and a customer without a row as
holding no points or credits, so there is nothing to be "not found".
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import JSONResponse

from domain.order import Order, OrderDocument, OrderStatus
from starter.http.auth import PrincipalDep, ShopRoute
from starter.http.context import HookDep
from starter.http.errors import error_responses
from starter.http.idempotency import Write, WriteDep
from starter.http.models import Balances, FulfillmentUpdate, SettingsDocument, Stock
from starter.http.params import CustomerId, OrderId, ShopId, Sku

router = APIRouter(route_class=ShopRoute)

ORDER = "/v1/shops/{shop_id}/orders/{order_id}"


async def _store_once(
    write: Write, body: BaseModel, store: Callable[[], Awaitable[object]]
) -> JSONResponse:
    """Store ``body`` once per key; the answer is the document as stored (``200``)."""
    document = body.model_dump(mode="json")

    async def act() -> tuple[int, Any]:
        await store()
        return 200, document

    return await write.once(document, act)


@router.put(
    ORDER,
    status_code=201,
    response_model=Order,
    responses={
        200: {"model": Order, "description": "The order existed and was replaced"},
        **error_responses(401, 403, 409, 422, 503),
    },
    tags=["orders"],
    summary="Create or replace an order",
)
async def put_order(
    write: WriteDep,
    shop_id: ShopId,
    order_id: OrderId,
    body: OrderDocument,
) -> JSONResponse:
    """``201`` when new, ``200`` when replaced; an order with a cancellation can't be
    replaced (``409 invalid_transition``)."""

    async def act() -> tuple[int, Any]:
        created = await write.hook.client.put_order(shop_id, order_id, body)
        order = await write.hook.client.get_order(shop_id, order_id)
        return (201 if created else 200), order.model_dump(mode="json")

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    ORDER,
    responses=error_responses(401, 403, 404, 422, 503),
    tags=["orders"],
    summary="The order with its status, items and tenders",
)
async def get_order(
    shop_id: ShopId, order_id: OrderId, hook: HookDep, caller: PrincipalDep
) -> Order:
    return await hook.client.get_order(shop_id, order_id)


@router.post(
    f"{ORDER}/fulfillment",
    response_model=Order,
    responses=error_responses(401, 403, 404, 409, 422, 503),
    tags=["orders"],
    summary="Report fulfillment progress (preparing … delivered)",
)
async def set_fulfillment(
    write: WriteDep,
    shop_id: ShopId,
    order_id: OrderId,
    body: FulfillmentUpdate,
) -> JSONResponse:
    """Shipping (``in_transit``, ``delivered``) while a request waits shows in the order's
    status, so the acceptance re-check refuses it with ``order_shipped``."""

    async def act() -> tuple[int, Any]:
        order = await write.hook.client.set_fulfillment(shop_id, order_id, OrderStatus(body.status))
        return 200, order.model_dump(mode="json")

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.put(
    "/v1/shops/{shop_id}/settings",
    response_model=SettingsDocument,
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="Replace the shop's cancellation settings (ISO 8601 durations)",
)
async def put_settings(
    write: WriteDep,
    shop_id: ShopId,
    body: SettingsDocument,
) -> JSONResponse:
    return await _store_once(
        write,
        body,
        lambda: write.hook.client.put_settings(shop_id, body),
    )


@router.get(
    "/v1/shops/{shop_id}/settings",
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="The shop's cancellation settings; defaults until the shop sets its own",
)
async def get_settings(shop_id: ShopId, hook: HookDep, caller: PrincipalDep) -> SettingsDocument:
    settings = await hook.client.get_settings(shop_id)
    # Constructed, not validated: settings stored by other clients may carry fractions.
    return SettingsDocument.model_construct(**settings.model_dump())


@router.put(
    "/v1/shops/{shop_id}/stock/{sku}",
    response_model=Stock,
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="Set the units available of a SKU",
)
async def put_stock(
    write: WriteDep,
    shop_id: ShopId,
    sku: Sku,
    body: Stock,
) -> JSONResponse:
    return await _store_once(
        write,
        body,
        lambda: write.hook.client.store.put_stock(shop_id, sku, body.available),
    )


@router.get(
    "/v1/shops/{shop_id}/stock/{sku}",
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="The units available of a SKU (0 for a SKU the shop never stocked)",
)
async def get_stock(shop_id: ShopId, sku: Sku, hook: HookDep, caller: PrincipalDep) -> Stock:
    available = await hook.client.store.get_stock(shop_id, sku)
    return Stock(available=available or 0)


@router.put(
    "/v1/shops/{shop_id}/customers/{customer_id}",
    response_model=Balances,
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="Set a customer's points and credits",
)
async def put_balances(
    write: WriteDep,
    shop_id: ShopId,
    customer_id: CustomerId,
    body: Balances,
) -> JSONResponse:
    async def act() -> tuple[int, Any]:
        currency = await write.hook.client.store.put_balances(
            shop_id, customer_id, body.points, body.credits, body.currency
        )
        answer = body.model_copy(update={"currency": currency})
        return 200, answer.model_dump(mode="json", exclude_none=True)

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    "/v1/shops/{shop_id}/customers/{customer_id}",
    responses=error_responses(401, 403, 422, 503),
    tags=["shop"],
    summary="A customer's points and credits (0 for a customer the shop doesn't know)",
    response_model_exclude_none=True,
)
async def get_balances(
    shop_id: ShopId, customer_id: CustomerId, hook: HookDep, caller: PrincipalDep
) -> Balances:
    balances = await hook.client.store.get_balances(shop_id, customer_id)
    points, credits = balances or (0, 0)
    currency = await hook.client.store.balance_currency(shop_id, customer_id)
    return Balances(points=points, credits=credits, currency=currency)
