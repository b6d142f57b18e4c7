"""Per-shop settings that shape cancellations.

Rule numbers are those of ``docs/rules.md``.
"""

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool

# Tests and demos use seconds; at most ten years keeps every timer and every deadline
# (now + window) far inside what Temporal, Python's datetime and PostgreSQL can hold.
MAX_WINDOW = timedelta(days=3650)
Window = Annotated[timedelta, Field(ge=timedelta(seconds=1), le=MAX_WINDOW)]
"""A wait of one second to ten years."""
UndoWindow = Annotated[timedelta, Field(ge=timedelta(0), le=MAX_WINDOW)]
"""Like :data:`Window`, but zero is allowed: no undo at all."""


class ShopSettings(BaseModel):
    """A shop's cancellation settings; durations are ISO 8601 in JSON (``PT24H``)."""

    model_config = ConfigDict(extra="forbid", ser_json_timedelta="iso8601")

    customer_cancellation_requests: StrictBool = True
    """Customers may request cancellations from My Account (rule 2)."""
    request_reminder_after: Window = timedelta(hours=24)
    """Remind the merchant and flag the run when a request waits this long (rule 4)."""
    undo_window: UndoWindow = timedelta(days=30)
    """How long after ``canceled`` the merchant may still undo (rule 11); ``PT0S``: never,
    the run closes as soon as the order is canceled."""
    repayment_window: Window = timedelta(days=7)
    """How long a customer has to pay again after an undo (rule 11)."""
