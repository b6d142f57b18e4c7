"""Routes for a shop's outgoing webhooks (spec 7.4): endpoints, secrets, deliveries.

The first ``PUT`` of an endpoint answers its signing secret, once; later ones change the
URL and the event filter and keep the secret. ``POST …/rotate-secret`` makes a new one and
keeps the old one signing for a while, so the receiver can switch without missing an
event. A delivery that failed for good is listed under ``…/deliveries?status=failed`` and
sent again with ``POST …/deliveries/{delivery_id}/redeliver``. docs/events.md has the rest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import JSONResponse, Response

from activities.events import Delivery, Endpoint, EventStore
from domain.errors import CancellationError, ErrorCode
from domain.events import MAX_FILTERS, MAX_URL_LENGTH, check_endpoint_url, check_filters
from starter import cursors
from starter.http.auth import PrincipalDep, ShopRoute
from starter.http.context import HookDep
from starter.http.errors import error_responses
from starter.http.idempotency import WriteDep
from starter.http.params import IDENTIFIER, ShopId

router = APIRouter(route_class=ShopRoute)

ENDPOINT: Final = "/v1/shops/{shop_id}/webhooks/{endpoint_id}"
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
DEFAULT_OVERLAP: Final = timedelta(hours=24)
"""How long the previous secret keeps signing after a rotation, unless the call says."""
MAX_OVERLAP: Final = timedelta(days=7)

EndpointId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=IDENTIFIER,
        description="The shop's name for the endpoint, e.g. `erp` or `mailer`.",
    ),
]
DeliveryId = Annotated[
    str,
    Path(pattern=r"^dlv_[0-9a-f]{32}$", description="A delivery (`delivery_id` in the list)."),
]


class EndpointDocument(BaseModel):
    """An endpoint as the shop registers it."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_LENGTH)]
    """Where events are POSTed: ``https`` (``http`` on loopback only in development)."""
    events: Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_FILTERS)] = [
        "cancellation.*"
    ]
    """Event types, ``cancellation.*`` or ``*``."""


class EndpointView(BaseModel):
    """An endpoint as the hook shows it; ``secret`` only in the answer that made it."""

    endpoint_id: str
    url: str
    events: list[str]
    created_at: datetime
    updated_at: datetime
    secret_created_at: datetime
    previous_secret_expires_at: datetime | None = None
    """While a rotation lasts: until when the previous secret still signs."""
    secret: str | None = None
    """``whsec_…``: shown once, when the endpoint is made or its secret rotated."""


class EndpointList(BaseModel):
    """The shop's endpoints."""

    items: list[EndpointView]


class RotateSecret(BaseModel):
    """A new signing secret; the current one keeps signing for a while."""

    model_config = ConfigDict(extra="forbid", ser_json_timedelta="iso8601")

    previous_secret_valid_for: Annotated[timedelta, Field(ge=timedelta(0), le=MAX_OVERLAP)] = (
        DEFAULT_OVERLAP
    )
    """ISO 8601; ``PT0S`` ends the old secret now (it leaked)."""


class DeliveryView(BaseModel):
    """One event's delivery to the endpoint."""

    delivery_id: str
    event_id: str
    """The ``webhook-id`` the receiver saw."""
    type: str
    cancellation_id: str
    sequence: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    """An endpoint's deliveries, newest first; ``next_cursor`` fetches the next page."""

    items: list[DeliveryView]
    next_cursor: str | None = None


def events_store(hook: HookDep) -> EventStore:
    """The events tables, over the hook's pool (a FastAPI dependency)."""
    return EventStore(hook.admin_store.pool)


StoreDep = Annotated[EventStore, Depends(events_store)]


@router.put(
    ENDPOINT,
    status_code=201,
    response_model=EndpointView,
    responses={
        200: {"model": EndpointView, "description": "The endpoint existed and was updated"},
        **error_responses(401, 403, 422, 503),
    },
    tags=["webhooks"],
    summary="Create or update a webhook endpoint (the first answer carries its secret)",
)
async def put_endpoint(
    write: WriteDep,
    shop_id: ShopId,
    endpoint_id: EndpointId,
    body: EndpointDocument,
    store: StoreDep,
) -> JSONResponse:
    """``201`` with the secret when new; ``200`` without it when updated. A URL that is not
    ``https`` (outside development), or that points at a private or loopback address, is
    ``422 validation_error``."""
    url = check_endpoint_url(body.url, allow_http=write.hook.settings.webhooks_allow_http)
    events = check_filters(body.events)

    async def act() -> tuple[int, Any]:
        endpoint, secret = await store.put_endpoint(shop_id, endpoint_id, url, events)
        return (201 if secret else 200), _view(endpoint, secret).model_dump(mode="json")

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    "/v1/shops/{shop_id}/webhooks",
    responses=error_responses(401, 403, 422, 503),
    tags=["webhooks"],
    summary="The shop's webhook endpoints",
)
async def list_endpoints(shop_id: ShopId, store: StoreDep, caller: PrincipalDep) -> EndpointList:
    return EndpointList(items=[_view(e) for e in await store.list_endpoints(shop_id)])


@router.get(
    ENDPOINT,
    responses=error_responses(401, 403, 404, 422, 503),
    tags=["webhooks"],
    summary="A webhook endpoint (never its secret)",
)
async def get_endpoint(
    shop_id: ShopId, endpoint_id: EndpointId, store: StoreDep, caller: PrincipalDep
) -> EndpointView:
    return _view(await store.get_endpoint(shop_id, endpoint_id))


@router.delete(
    ENDPOINT,
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422, 503),
    tags=["webhooks"],
    summary="Delete a webhook endpoint and its deliveries",
)
async def delete_endpoint(
    shop_id: ShopId, endpoint_id: EndpointId, store: StoreDep, caller: PrincipalDep
) -> Response:
    await store.delete_endpoint(shop_id, endpoint_id)
    return Response(status_code=204)


@router.post(
    f"{ENDPOINT}/rotate-secret",
    response_model=EndpointView,
    responses=error_responses(401, 403, 404, 422, 503),
    tags=["webhooks"],
    summary="Make a new signing secret; the previous one signs too for a while",
)
async def rotate_secret(
    write: WriteDep,
    shop_id: ShopId,
    endpoint_id: EndpointId,
    store: StoreDep,
    body: RotateSecret | None = None,
) -> JSONResponse:
    """Deliveries are signed with both secrets until ``previous_secret_expires_at``; the
    answer carries the new secret, once."""
    rotation = body or RotateSecret()

    async def act() -> tuple[int, Any]:
        endpoint, secret = await store.rotate_secret(
            shop_id, endpoint_id, rotation.previous_secret_valid_for
        )
        return 200, _view(endpoint, secret).model_dump(mode="json")

    fingerprint = rotation.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    f"{ENDPOINT}/deliveries",
    responses=error_responses(401, 403, 404, 422, 503),
    tags=["webhooks"],
    summary="The endpoint's deliveries, newest first (e.g. `?status=failed`)",
)
async def list_deliveries(
    shop_id: ShopId,
    endpoint_id: EndpointId,
    store: StoreDep,
    caller: PrincipalDep,
    status: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(description="Only this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=300, description="`next_cursor` of a page.")
    ] = None,
) -> DeliveryPage:
    rows = await store.list_deliveries(
        shop_id,
        endpoint_id,
        status=status,
        limit=limit + 1,
        before=_parse_cursor(cursor) if cursor else None,
    )
    page = rows[:limit]
    next_cursor = _cursor(page[-1]) if len(rows) > limit else None
    return DeliveryPage(items=[_delivery_view(d) for d in page], next_cursor=next_cursor)


@router.post(
    f"{ENDPOINT}/deliveries/{{delivery_id}}/redeliver",
    status_code=202,
    response_model=DeliveryView,
    responses=error_responses(401, 403, 404, 409, 422, 503),
    tags=["webhooks"],
    summary="Send a failed (or delivered) delivery again",
)
async def redeliver(
    write: WriteDep,
    shop_id: ShopId,
    endpoint_id: EndpointId,
    delivery_id: DeliveryId,
    store: StoreDep,
) -> JSONResponse:
    """``202``: the relay sends it now, with a fresh retry schedule and the same
    ``webhook-id``. A delivery still pending is ``409 invalid_transition``."""

    async def act() -> tuple[int, Any]:
        delivery = await store.redeliver(shop_id, endpoint_id, delivery_id)
        return 202, _delivery_view(delivery).model_dump(mode="json")

    return await write.once({}, act)


def _view(endpoint: Endpoint, secret: str | None = None) -> EndpointView:
    view = EndpointView.model_validate(endpoint, from_attributes=True)
    view.secret = secret
    return view


def _delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView.model_validate(delivery, from_attributes=True)


# The cursor is the last row's creation time and id, opaque and URL-safe on the wire.


def _cursor(delivery: Delivery) -> str:
    raw = f"{delivery.created_at.isoformat()}|{delivery.delivery_id}"
    return cursors.wrap(raw)


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    at, _, delivery_id = cursors.unwrap(cursor).partition("|")
    try:
        return datetime.fromisoformat(at), delivery_id
    except ValueError:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, "cursor is not valid") from None
