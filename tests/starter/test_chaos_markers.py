"""The chaos report counts retries of local activities from the SDK's markers."""

from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from tools.chaos import _local_activity

HISTORY = (
    Path(__file__).parents[1]
    / "workflows/histories/local-store-writes"
    / "test_customer_request_accepted_is_refunded_and_canceled--1.json"
)


def test_local_activity_markers_name_the_store_writes_and_their_attempts() -> None:
    history = WorkflowHistory.from_json("run", HISTORY.read_text())
    found = [
        _local_activity(event.marker_recorded_event_attributes)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    local = [f for f in found if f is not None]
    assert local == [
        ("open_cancellation (local)", 1),
        ("apply_changes (local)", 1),
        ("apply_changes (local)", 1),
    ]
    assert None in found  # the patch marker is not a local activity
