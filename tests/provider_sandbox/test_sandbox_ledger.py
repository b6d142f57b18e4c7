"""The pure ledger rules: statuses and the recapture check, without HTTP or storage."""

from datetime import UTC, datetime, timedelta

import pytest

from provider_sandbox.ledger import EntryType, LedgerEntry, PaymentStatus, check_recapture, fold
from provider_sandbox.models import Behavior, RecaptureOutcome

T0 = datetime(2030, 1, 1, tzinfo=UTC)

A, C, V, R, X, F = (
    EntryType.AUTHORIZE,
    EntryType.CAPTURE,
    EntryType.VOID,
    EntryType.REFUND,
    EntryType.RECAPTURE,
    EntryType.REFUND_REVERSAL,
)


def ledger(*movements: tuple[EntryType, int]) -> list[LedgerEntry]:
    return [
        LedgerEntry(T0 + timedelta(seconds=i), kind, amount, None)
        for i, (kind, amount) in enumerate(movements)
    ]


@pytest.mark.parametrize(
    ("movements", "status", "recapturable"),
    [
        pytest.param([(A, 100)], PaymentStatus.AUTHORIZED, 0, id="authorized"),
        pytest.param([(A, 100), (C, 100)], PaymentStatus.CAPTURED, 0, id="captured"),
        pytest.param([(A, 100), (V, 100)], PaymentStatus.VOIDED, 100, id="voided"),
        pytest.param(
            [(A, 100), (C, 100), (R, 30)], PaymentStatus.PARTIALLY_REFUNDED, 30, id="partial"
        ),
        pytest.param([(A, 100), (C, 100), (R, 100)], PaymentStatus.REFUNDED, 100, id="refunded"),
        pytest.param(
            [(A, 100), (C, 100), (R, 100), (X, 100)],
            PaymentStatus.CAPTURED,
            0,
            id="refund-recaptured",
        ),
        pytest.param(
            [(A, 100), (C, 100), (R, 100), (X, 40)],
            PaymentStatus.PARTIALLY_REFUNDED,
            60,
            id="refund-partly-recaptured",
        ),
        pytest.param(
            [(A, 100), (V, 100), (X, 70)], PaymentStatus.CAPTURED, 30, id="void-partly-recaptured"
        ),
        pytest.param(
            [(A, 100), (V, 100), (X, 70), (R, 70)],
            PaymentStatus.REFUNDED,
            100,
            id="void-recaptured-then-refunded",
        ),
        pytest.param(
            [(A, 100), (C, 100), (R, 100), (F, 100)],
            PaymentStatus.CAPTURED,
            0,
            id="refund-failed-after-success",
        ),
        pytest.param(
            [(A, 100), (C, 100), (R, 30), (R, 20), (F, 30)],
            PaymentStatus.PARTIALLY_REFUNDED,
            20,
            id="one-of-two-refunds-failed",
        ),
    ],
)
def test_status_and_recapturable_follow_the_ledger(
    movements: list[tuple[EntryType, int]], status: PaymentStatus, recapturable: int
) -> None:
    balance = fold(ledger(*movements))

    assert (balance.status, balance.recapturable) == (status, recapturable)


def test_pending_refunds_are_reserved() -> None:
    balance = fold(ledger((A, 100), (C, 100), (R, 30)))

    assert balance.refundable(pending_refunds=50) == 20


def test_recapture_window_counts_from_the_last_release() -> None:
    balance = fold(ledger((A, 100), (C, 100), (R, 10), (R, 10)))
    behavior = Behavior(recapture_window_seconds=60)
    last_refund = T0 + timedelta(seconds=3)

    inside = check_recapture(behavior, balance, last_refund + timedelta(seconds=59))
    outside = check_recapture(behavior, balance, last_refund + timedelta(seconds=60))

    assert (inside.outcome, inside.until) == (
        RecaptureOutcome.RESTORABLE,
        last_refund + timedelta(seconds=60),
    )
    assert (outside.outcome, outside.until) == (RecaptureOutcome.REAUTH_REQUIRED, None)


def test_a_failed_refund_is_refundable_again() -> None:
    """The money of a refund that failed after success is the merchant's again, to the unit."""
    balance = fold(ledger((A, 100), (C, 100), (R, 60), (F, 60)))

    assert (balance.refunded, balance.net_captured, balance.refundable(0)) == (0, 100, 100)
