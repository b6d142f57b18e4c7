"""Replay the committed histories against today's workflow code (determinism guard).

Histories are recorded from the scenario tests on the dev server with
``RECORD_HISTORIES=1 scripts/test tests/workflows``. A change to workflow code that
would break running cancellations fails here; guard it with ``workflow.patched``.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.order_cancellation import OrderCancellationWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_committed():
    """The replay suite has histories of every kind of run to replay."""
    names = {path.name for path in HISTORIES}
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
        assert any(name.startswith(scenario) for name in names), scenario


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "history",
    [WorkflowHistory.from_json(p.stem, p.read_text()) for p in HISTORIES],
    ids=[p.stem for p in HISTORIES],
)
async def test_history_replays(history: WorkflowHistory):
    replayer = Replayer(
        workflows=[OrderCancellationWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
