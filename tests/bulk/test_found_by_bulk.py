"""A fault in the single start path that the bulk job's worker-kill test found.

A merchant-initiated start opens the cancellation and applies its acceptance in one
workflow task (both store writes are local activities). When the worker dies after the
acceptance committed but before that task completed, the next worker runs the task again:
``open_cancellation`` finds its row, as its docstring promises, but answers with the order
as it is *now*, its items already canceled by the acceptance that committed. The replayed
acceptance then finds "nothing left to cancel", the run ends ``rejected``
(``acceptance_refused``), and the store keeps the items canceled with no refund made.

This module reproduces the cause without killing anything; the kill test
(``test_worker_killed_mid_job_starts_no_order_twice``) met the whole chain about once in
twelve runs. The fix belongs to ``StoreRepository.open_cancellation`` (answer a retry with
the order as the first attempt saw it), outside bulk cancellation's scope.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.cancellation import (
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    ReasonCode,
)
from domain.requests import AcceptRequest, StartRequest
from domain.scope import scope_of
from tests.bulk.conftest import SKU, Shop
from tests.conftest import sold_out_start

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_open_cancellation_retried_after_the_acceptance_answers_the_order_as_opened(
    shop: Shop,
) -> None:
    """The re-run of the opening (after a worker died before the task completed) must let
    the re-run of the acceptance find the same items to cancel."""
    order_id = await shop.order(items=[(SKU, 1, 1000)])
    accept = AcceptRequest(reason_code=ReasonCode.SOLD_OUT)
    view, created = await shop.client.start_cancellation(
        shop.shop_id,
        order_id,
        StartRequest(initiated_by="merchant", channel="admin", accept=accept),
    )
    assert created and view.status is not CancellationStatus.REQUESTED
    # What the next worker's replay sends: the same start, the same opening view.
    start = sold_out_start(view.cancellation_id, shop.shop_id, order_id)
    opening = CancellationView(
        cancellation_id=view.cancellation_id,
        shop_id=shop.shop_id,
        order_id=order_id,
        workflow_id=view.cancellation_id,
        status=CancellationStatus.REQUESTED,
        order_status=None,
        initiated_by=InitiatedBy.MERCHANT,
        channel=Channel.ADMIN,
        reason_code=ReasonCode.SOLD_OUT,
        reason="",
    )

    reopened = await shop.store.open_cancellation(start, 1, opening, datetime.now(UTC))

    scope = scope_of(reopened.order, None)  # the replayed acceptance's own computation
    assert [(i.item_id, i.quantity) for i in scope.items] == [("i1", 1)]
