"""What the simulated card provider does to payments and refunds.

Every method expects the caller to hold a `Store.transaction()`, and does all of its checks
before its first write, so a rejected request leaves nothing behind. Mutations return an
`Outcome` (status code and body) that the HTTP layer stores under the idempotency key.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from provider_sandbox.clock import to_iso
from provider_sandbox.errors import ApiError, ErrorCode, error_body
from provider_sandbox.ledger import (
    Balance,
    EntryType,
    LedgerEntry,
    RefundStatus,
    check_recapture,
    fold,
)
from provider_sandbox.models import (
    CreatePaymentRequest,
    RecaptureOutcome,
    RecaptureRequest,
    RefundBehavior,
    RefundRequest,
    VoidRequest,
)
from provider_sandbox.storage import PaymentRecord, RefundRecord, Store
from provider_sandbox.webhooks import WebhookOutbox

JSONObject = dict[str, Any]

CARD_DECLINED = "card_declined"
"""The failure code of a refund declined at once, or of a pending one that fails."""

CARD_CLOSED = "expired_or_canceled_card"
"""The failure code of a refund that failed after it had succeeded (as Stripe names it)."""

REFUND_SUCCEEDED_EVENT = "refund.succeeded"
REFUND_FAILED_EVENT = "refund.failed"


@dataclass(frozen=True)
class Outcome:
    """The answer to a mutation: what the client sees, and what a retry will see."""

    status_code: int
    body: JSONObject


DEFAULT_ACCOUNT = "default"
"""The account of requests that name none (the `Provider-Account` header is missing)."""


def new_id(prefix: str) -> str:
    """A fresh random id such as `pay_3f2a…`."""
    return f"{prefix}_{secrets.token_hex(12)}"


class PaymentProvider:
    """The provider's operations on stored payments.

    Args:
        store: Where payments live; the caller holds its transaction.
        outbox: Where webhook events go when a refund settles or fails; None queues none
            (no webhook URL is configured, so an unconfigured sandbox doesn't pile up events).
    """

    def __init__(self, store: Store, outbox: WebhookOutbox | None = None) -> None:
        self._store = store
        self._outbox = outbox

    # Reads

    def get_payment(self, payment_id: str, account: str = DEFAULT_ACCOUNT) -> JSONObject:
        """The payment with its totals and ledger."""
        return self._payment_json(self._payment(payment_id, account))

    def get_refund(self, refund_id: str, account: str = DEFAULT_ACCOUNT) -> JSONObject:
        """A refund as it stands now."""
        refund = self._store.get_refund(refund_id)
        payment = None if refund is None else self._store.get_payment(refund.payment_id)
        if refund is None or payment is None or payment.account != account:
            raise ApiError(404, ErrorCode.REFUND_NOT_FOUND, f"no refund {refund_id}")
        return refund_json(refund)

    def list_refunds(self, payment_id: str, account: str = DEFAULT_ACCOUNT) -> JSONObject:
        """A payment's refunds, newest first: `{"data": [refund, …]}`."""
        self._payment(payment_id, account)
        return {"data": [refund_json(refund) for refund in self._store.refunds_of(payment_id)]}

    def get_recapture_check(
        self, payment_id: str, now: datetime, account: str = DEFAULT_ACCOUNT
    ) -> JSONObject:
        """Whether refunded or voided money could be taken back now; changes nothing."""
        payment = self._payment(payment_id, account)
        check = check_recapture(payment.behavior, self._balance(payment_id), now)
        until = None if check.until is None else to_iso(check.until)
        return {"outcome": check.outcome.value, "until": until}

    # Mutations

    def create_payment(
        self,
        request: CreatePaymentRequest,
        key: str | None,
        now: datetime,
        account: str = DEFAULT_ACCOUNT,
    ) -> Outcome:
        """Authorize a card payment, and capture it unless asked not to."""
        payment = PaymentRecord(
            id=new_id("pay"),
            amount=request.amount,
            currency=request.currency,
            behavior=request.behavior,
            created_at=now,
            account=account,
        )
        self._store.insert_payment(payment)
        self._record(payment.id, EntryType.AUTHORIZE, request.amount, key, now)
        if request.capture:
            self._record(payment.id, EntryType.CAPTURE, request.amount, key, now)
        return Outcome(201, self._payment_json(payment))

    def refund_payment(
        self,
        payment_id: str,
        request: RefundRequest,
        key: str | None,
        now: datetime,
        account: str = DEFAULT_ACCOUNT,
    ) -> Outcome:
        """Return captured money to the customer, as the payment's refund behavior says."""
        payment = self._payment(payment_id, account)
        balance = self._balance(payment_id)
        self._check_refundable(balance, self._store.pending_refund_total(payment_id), request)
        refund = self._new_refund(payment, request, key, now)
        self._store.insert_refund(refund)
        if refund.status == RefundStatus.SUCCEEDED:
            self._record(payment_id, EntryType.REFUND, refund.amount, key, now)
        if refund.status == RefundStatus.DECLINED:
            message = "the card network declined the refund"
            body = error_body(ErrorCode.REFUND_DECLINED, message, refund=refund_json(refund))
            return Outcome(402, body)
        return Outcome(201, refund_json(refund))

    def void_payment(
        self,
        payment_id: str,
        request: VoidRequest,
        key: str | None,
        now: datetime,
        account: str = DEFAULT_ACCOUNT,
    ) -> Outcome:
        """Release an uncaptured authorization in full.

        `request` is empty; it is taken so that every mutation has the same signature.
        """
        payment = self._payment(payment_id, account)
        balance = self._balance(payment_id)
        if balance.captured:
            message = "the payment is captured; refund it instead"
            raise ApiError(409, ErrorCode.PAYMENT_ALREADY_CAPTURED, message)
        if balance.voided:
            raise ApiError(409, ErrorCode.PAYMENT_VOIDED, "the payment is already voided")
        self._record(payment_id, EntryType.VOID, payment.amount, key, now)
        return Outcome(200, self._payment_json(payment))

    def recapture_payment(
        self,
        payment_id: str,
        request: RecaptureRequest,
        key: str | None,
        now: datetime,
        account: str = DEFAULT_ACCOUNT,
    ) -> Outcome:
        """Take refunded or voided money from the customer again, while the check allows it."""
        payment = self._payment(payment_id, account)
        balance = self._balance(payment_id)
        check = check_recapture(payment.behavior, balance, now)
        if check.outcome != RecaptureOutcome.RESTORABLE:
            message = f"recapture check answers {check.outcome.value}"
            raise ApiError(409, ErrorCode.RECAPTURE_UNAVAILABLE, message)
        if request.amount > balance.recapturable:
            message = f"at most {balance.recapturable} can be recaptured"
            raise ApiError(409, ErrorCode.AMOUNT_EXCEEDS_RECAPTURABLE, message)
        self._record(payment_id, EntryType.RECAPTURE, request.amount, key, now)
        return Outcome(200, self._payment_json(payment))

    def settle_due_refunds(self, now: datetime) -> int:
        """Decide the refunds whose time has come: pending ones settle (or fail, for
        `pending_then_fail`), and `fail_after_success` ones fail, giving the money back to
        the merchant (`refund_reversal`). Each change queues its webhook event.

        Ledger entries are dated at the scheduled time, not at the moment somebody
        noticed, so the ledger and the recapture window don't depend on polling.

        Returns:
            How many refunds changed.
        """
        due = self._store.due_refunds(now)
        for refund in due:
            payment = self._store.get_payment(refund.payment_id)
            assert payment is not None, "payments are never deleted"
            if payment.behavior.refund == RefundBehavior.PENDING_THEN_FAIL:
                self._store.mark_refund_failed(refund.id, CARD_DECLINED)
                self._queue_event(REFUND_FAILED_EVENT, refund.id, now)
                continue
            settled_at = refund.settle_at or now
            self._store.mark_refund_settled(refund.id, settled_at)
            self._record(
                refund.payment_id,
                EntryType.REFUND,
                refund.amount,
                refund.idempotency_key,
                settled_at,
            )
            self._queue_event(REFUND_SUCCEEDED_EVENT, refund.id, now)
        failing = self._store.failing_refunds(now)
        for refund in failing:
            failed_at = refund.fail_at or now
            self._store.mark_refund_failed(refund.id, CARD_CLOSED)
            self._record(
                refund.payment_id,
                EntryType.REFUND_REVERSAL,
                refund.amount,
                refund.idempotency_key,
                failed_at,
            )
            self._queue_event(REFUND_FAILED_EVENT, refund.id, now)
        return len(due) + len(failing)

    # Helpers

    def _payment(self, payment_id: str, account: str) -> PaymentRecord:
        payment = self._store.get_payment(payment_id)
        if payment is None or payment.account != account:
            # Another account's payment is as unknown as one that doesn't exist.
            raise ApiError(404, ErrorCode.PAYMENT_NOT_FOUND, f"no payment {payment_id}")
        return payment

    def _balance(self, payment_id: str) -> Balance:
        return fold(self._store.ledger(payment_id))

    def _record(
        self, payment_id: str, kind: EntryType, amount: int, key: str | None, at: datetime
    ) -> None:
        self._store.append_ledger(payment_id, LedgerEntry(at, kind, amount, key))

    @staticmethod
    def _check_refundable(balance: Balance, pending: int, request: RefundRequest) -> None:
        if balance.captured == 0 and balance.voided:
            raise ApiError(409, ErrorCode.PAYMENT_VOIDED, "the payment was voided")
        if balance.captured == 0:
            raise ApiError(409, ErrorCode.PAYMENT_NOT_CAPTURED, "the payment is not captured")
        refundable = balance.refundable(pending)
        if request.amount > refundable:
            message = f"at most {refundable} can be refunded ({pending} pending)"
            raise ApiError(409, ErrorCode.AMOUNT_EXCEEDS_REFUNDABLE, message)

    @staticmethod
    def _new_refund(
        payment: PaymentRecord, request: RefundRequest, key: str | None, now: datetime
    ) -> RefundRecord:
        behavior = payment.behavior
        status = {
            RefundBehavior.SUCCEED: RefundStatus.SUCCEEDED,
            RefundBehavior.DECLINE: RefundStatus.DECLINED,
            RefundBehavior.PENDING: RefundStatus.PENDING,
            RefundBehavior.PENDING_THEN_FAIL: RefundStatus.PENDING,
            RefundBehavior.FAIL_AFTER_SUCCESS: RefundStatus.SUCCEEDED,
        }[behavior.refund]
        settle_at = now + timedelta(seconds=behavior.settle_after_seconds)
        fail_at = now + timedelta(seconds=behavior.fail_after_seconds)
        return RefundRecord(
            id=new_id("re"),
            payment_id=payment.id,
            amount=request.amount,
            currency=payment.currency,
            status=status,
            created_at=now,
            settle_at=settle_at if status == RefundStatus.PENDING else None,
            settled_at=now if status == RefundStatus.SUCCEEDED else None,
            failure_code=CARD_DECLINED if status == RefundStatus.DECLINED else None,
            idempotency_key=key,
            fail_at=fail_at if behavior.refund == RefundBehavior.FAIL_AFTER_SUCCESS else None,
            metadata=request.metadata,
        )

    def _queue_event(self, event_type: str, refund_id: str, now: datetime) -> None:
        if self._outbox is None:
            return
        refund = self._store.get_refund(refund_id)
        assert refund is not None, "refunds are never deleted"
        payment = self._store.get_payment(refund.payment_id)
        account = None if payment is None or payment.account == DEFAULT_ACCOUNT else payment.account
        self._outbox.queue(
            {
                "id": new_id("evt"),
                "type": event_type,
                "created": to_iso(now),
                "account": account,
                "refund": refund_json(refund),
            }
        )

    def _payment_json(self, payment: PaymentRecord) -> JSONObject:
        entries = self._store.ledger(payment.id)
        balance = fold(entries)
        pending = self._store.pending_refund_total(payment.id)
        return {
            "id": payment.id,
            "amount": payment.amount,
            "currency": payment.currency,
            "status": balance.status.value,
            "captured_amount": balance.captured,
            "refunded_amount": balance.refunded,
            "pending_refund_amount": pending,
            "refundable_amount": max(balance.refundable(pending), 0),
            "recapturable_amount": balance.recapturable,
            "created_at": to_iso(payment.created_at),
            "ledger": [_entry_json(entry) for entry in entries],
            "behavior": payment.behavior.model_dump(mode="json"),
        }


def refund_json(refund: RefundRecord) -> JSONObject:
    """The refund object clients and webhooks see."""
    return {
        "id": refund.id,
        "payment_id": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status.value,
        "created_at": to_iso(refund.created_at),
        "settled_at": None if refund.settled_at is None else to_iso(refund.settled_at),
        "failure_code": refund.failure_code,
        "metadata": refund.metadata or {},
    }


def _entry_json(entry: LedgerEntry) -> JSONObject:
    return {
        "at": to_iso(entry.at),
        "type": entry.type.value,
        "amount": entry.amount,
        "idempotency_key": entry.idempotency_key,
    }
