"""Replay the committed histories against today's workflow code (determinism guard).

Histories are recorded from the scenario tests on the dev server with
``RECORD_HISTORIES=<folder> scripts/test tests/workflows``, one folder per generation of
the workflow code (``activity-store-writes``: store writes as activity tasks, before the
``store-writes-local`` patch; ``local-store-writes``: after it; ``tenant-ids``: release 2,
ids ``cancellation~{shop}~{order}~{n}`` and the shop on every provider call). Every
generation keeps
replaying: runs started under it may still be open. A patch that only some runs meet (such
as ``retry-refund-after-failing-again``) adds the histories of its scenarios to the current
generation's folder. A change to workflow code that would
break running cancellations fails here; guard it with ``workflow.patched``.
"""

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.order_cancellation import OrderCancellationWorkflow
from workflows.policies import (
    PROVIDER_EVENTS_ON_PROVIDER_LINES,
    PROVIDER_REFUND_EVENTS,
    RECONCILE_BEFORE_SWITCH,
    RETRY_AFTER_FAILING_AGAIN,
    SKIP_QUEUED_REPEATS,
    STORE_WRITES_LOCAL,
)

ROOT = Path(__file__).parent / "histories"
HISTORIES = sorted(ROOT.glob("*/*.json"))
GENERATIONS = ("activity-store-writes", "local-store-writes", "tenant-ids")


def test_histories_are_committed():
    """The replay suite has histories of every kind of run to replay, in every generation."""
    names = {f"{path.parent.name}/{path.name}" for path in HISTORIES}
    for scenario in (
        "test_customer_request_accepted_is_refunded_and_canceled",
        "test_reject_restores_the_order_and_tells_the_customer",
        "test_withdraw_restores_the_order",
        "test_bank_transfer_waits_for_the_merchants_deposit",
        "test_declined_refund_retried_as_is_fails_again_then_goes_by_bank",
        "test_pending_refund_is_processing_until_it_settles",
        "test_points_and_credits_only_order_is_canceled_at_once",
        "test_merchant_cancellation_starts_accepted",
    ):
        for generation in GENERATIONS:
            assert any(name.startswith(f"{generation}/{scenario}") for name in names), (
                generation,
                scenario,
            )


def test_every_patch_has_a_history_that_takes_it():
    """Each ``workflow.patched`` branch of today's code is replayed from a recorded run."""
    taken = set()
    for path in HISTORIES:
        for event in WorkflowHistory.from_json(path.stem, path.read_text()).events:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                (payload,) = marker.details["patch-data"].payloads
                taken.add(json.loads(payload.data)["id"])
    patches = {
        STORE_WRITES_LOCAL,
        RETRY_AFTER_FAILING_AGAIN,
        SKIP_QUEUED_REPEATS,
        PROVIDER_REFUND_EVENTS,
        RECONCILE_BEFORE_SWITCH,
        PROVIDER_EVENTS_ON_PROVIDER_LINES,
    }
    assert patches <= taken, taken


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "history",
    [WorkflowHistory.from_json(p.stem, p.read_text()) for p in HISTORIES],
    ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES],
)
async def test_history_replays(history: WorkflowHistory):
    replayer = Replayer(
        workflows=[OrderCancellationWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
