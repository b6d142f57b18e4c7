"""How long the cancellation workflow waits and how it retries, with the reason for each
value, and the ids of its ``workflow.patched`` branches.

Changing a timeout or a retry policy is safe for running cancellations; changing what a
patch guards is not (``tests/workflows/test_replay.py``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

# ----------------------------------------------------------------------------- store writes

# Store writes are short transactions; a database restart takes seconds, so retry
# quickly at first and keep retrying: a change set applies at most once anyway. The short
# timeout notices an attempt lost with a killed worker soon (the chaos run saw 35 s waits
# with 30 s).
STORE_TIMEOUT = timedelta(seconds=10)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# A local activity's retries stay in the worker while the backoff is under the threshold,
# and wait on a workflow timer past it. Unlike an activity's, those write history (6 events
# a timer): with waits of up to 2 min a day-long database outage adds about 4,300 events to
# a waiting run, far inside Temporal's limit (docs/design.md, "Timeouts and retries").
STORE_LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
)
STORE_LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)

# ----------------------------------------------------------------------------- the provider

# A provider call waits at most 10 s for an answer (the client's timeout); the same
# idempotency key on every attempt means a retry can never pay twice.
PROVIDER_TIMEOUT = timedelta(seconds=30)
# Provider activities heartbeat every second while a call is slow: a worker that died
# mid-call is noticed after 5 s instead of the 30 s above (docs/reliability.md).
PROVIDER_HEARTBEAT = timedelta(seconds=5)
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# Pending refunds usually settle within minutes; the provider gives up on them after a
# week, and so do we (the line fails and a person looks at it).
# A pending refund is polled until the provider decides it, however long that takes (a bank
# can take days): the line fails only when the provider says it failed, never because we
# stopped asking. Retries of one activity add no history events.
SETTLEMENT_TIMEOUT = timedelta(seconds=15)
SETTLEMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(minutes=1),
)


# A refund whose provider call has failed for this long marks the run
# `NeedsAttention = provider_unavailable` (and keeps trying with the same key); the mark
# clears when the provider answers. An hour: longer than a restart or a deploy of the
# provider, short enough that a person hears about a real outage the same day.
PROVIDER_OUTAGE_ALERT = timedelta(hours=1)


def provider_call(
    task_queue: str | None, *, alert_after: timedelta | None = None
) -> dict[str, Any]:
    """The options of every provider activity (refund, void, recapture and its check).

    ``alert_after`` bounds the retries: the activity then fails with a schedule-to-close
    timeout, so the workflow can say the provider is away and start it again.
    """
    options: dict[str, Any] = {
        "task_queue": task_queue,
        "start_to_close_timeout": PROVIDER_TIMEOUT,
        "heartbeat_timeout": PROVIDER_HEARTBEAT,
        "retry_policy": PROVIDER_RETRY,
    }
    if alert_after is not None:
        options["schedule_to_close_timeout"] = alert_after
    return options


# ----------------------------------------------------------------------------- patches

# Runs begun after this patch write to the store with local activities; older runs keep
# their activity tasks (replayed by tests/workflows/test_replay.py).
STORE_WRITES_LOCAL = "store-writes-local"
# With this patch the same "retry as is" sent again once the line has failed again is a new
# attempt; before it, every repeat of that body answered with the view. Decided when such a
# retry first arrives, so only runs that meet one carry the marker.
RETRY_AFTER_FAILING_AGAIN = "retry-refund-after-failing-again"
# With this patch a command queued twice before the first copy took effect (two identical
# signals, or updates without an idempotency key, in one workflow task) is carried out once;
# before it, the second copy was performed again (a retried refund could pay twice).
SKIP_QUEUED_REPEATS = "skip-queued-repeats"
# With this patch the provider's late word on a refund moves the line: a success after the
# line was marked failed, a failure after it succeeded (the refund was reversed). Before it,
# such webhooks were ignored. Consulted only when such an event arrives.
PROVIDER_REFUND_EVENTS = "provider-refund-events"
# With this patch a failed card line is switched to credits or a bank deposit only after the
# provider was asked what its refund id already did (a refund that went through after all
# settles the line instead). Consulted only when such a switch arrives.
RECONCILE_BEFORE_SWITCH = "reconcile-before-switch"
# With this patch the provider's word on a refund is applied only to a line the provider
# still carries: a card line switched to credits or a bank deposit keeps its old refund's
# reference (for the audit), and a late or repeated webhook of that refund's reversal used to
# reopen the switched line, as if the credits had been taken back (a retry would then pay
# twice). Consulted only when such an event arrives.
PROVIDER_EVENTS_ON_PROVIDER_LINES = "provider-events-on-provider-lines"
