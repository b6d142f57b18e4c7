"""Bulk cancellation routes (spec 7.6): start a job or a dry run, read it, its outcomes, stop it.

The same bearer token and shop scoping as every ``/v1/shops/{shop_id}/…`` route; the
``Idempotency-Key`` of a start also names the job, so a repeat never starts a second one,
even after the hook died between starting the job and recording its answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import JSONResponse

from domain.bulk import BULK_ID_PATTERN, BulkDryRun, BulkItemPage, BulkJob, BulkRequest
from starter.bulk import DEFAULT_ITEMS_LIMIT, MAX_ITEMS_LIMIT, BulkClient
from starter.http.auth import PrincipalDep, ShopRoute
from starter.http.context import Hook, HookDep
from starter.http.errors import error_responses
from starter.http.idempotency import WriteDep
from starter.http.params import ShopId

BULK = "/v1/shops/{shop_id}/bulk-cancellations"

BulkIdParam = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=BULK_ID_PATTERN, description="The job."),
]

router = APIRouter(route_class=ShopRoute, tags=["bulk cancellations"])


def _bulk(hook: Hook) -> BulkClient:
    return BulkClient(hook.client, task_queue=hook.settings.task_queue)


@router.post(
    BULK,
    status_code=202,
    response_model=BulkJob,
    responses={
        200: {"model": BulkDryRun, "description": "A dry run: what a job would do"},
        **error_responses(401, 403, 422, 503),
    },
    summary="Cancel every open order holding a SKU (or, with dry_run, show what would happen)",
)
async def start_bulk_cancellation(
    write: WriteDep,
    shop_id: ShopId,
    body: BulkRequest,
) -> JSONResponse:
    """``202`` with the job, which runs on; ``200`` with the dry run's orders and plans."""
    bulk = _bulk(write.hook)

    async def act() -> tuple[int, Any]:
        if body.dry_run:
            dry = await bulk.dry_run(shop_id, body)
            return 200, dry.model_dump(mode="json")
        job = await bulk.start(shop_id, body, actor=write.caller.actor, idempotency_key=write.key)
        return 202, job.model_dump(mode="json")

    fingerprint = body.model_dump(mode="json")
    return await write.once(fingerprint, act)


@router.get(
    f"{BULK}/{{bulk_id}}",
    responses=error_responses(401, 403, 404, 422, 503),
    summary="The job: its status and counts",
)
async def get_bulk_cancellation(
    shop_id: ShopId, bulk_id: BulkIdParam, hook: HookDep, caller: PrincipalDep
) -> BulkJob:
    """The job as the store has it (each outcome is written as it happens)."""
    return await _bulk(hook).get(shop_id, bulk_id)


@router.get(
    f"{BULK}/{{bulk_id}}/items",
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Each matched order's outcome, by order id",
)
async def bulk_cancellation_items(
    shop_id: ShopId,
    bulk_id: BulkIdParam,
    hook: HookDep,
    caller: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_LIMIT)] = DEFAULT_ITEMS_LIMIT,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=300, description="`next_cursor` of a page.")
    ] = None,
) -> BulkItemPage:
    """``started`` with the cancellation id, ``already_open`` with the open one, or
    ``refused`` with the error code."""
    return await _bulk(hook).items(shop_id, bulk_id, cursor=cursor, limit=limit)


@router.post(
    f"{BULK}/{{bulk_id}}/stop",
    response_model=BulkJob,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Start no further orders; the cancellations started go on",
)
async def stop_bulk_cancellation(
    write: WriteDep,
    shop_id: ShopId,
    bulk_id: BulkIdParam,
) -> JSONResponse:
    """The job after the stop; stopping a finished or stopped job changes nothing."""

    async def act() -> tuple[int, Any]:
        job = await _bulk(write.hook).stop(shop_id, bulk_id)
        return 200, job.model_dump(mode="json")

    return await write.once({}, act)
