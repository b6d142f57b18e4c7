"""Activities that move money through the payment provider."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.provider_client import (
    PaymentProviderClient,
    ProviderRefused,
    ProviderUnavailable,
    RefundDeclined,
)
from domain.errors import FailureType

# Failure types the workflow reacts to (ApplicationError.type): ``domain.errors.FailureType``.
PROVIDER_ERROR = FailureType.PROVIDER_ERROR
PAYMENT_MISMATCH = FailureType.PAYMENT_MISMATCH
REFUND_DECLINED = FailureType.REFUND_DECLINED
PROVIDER_REFUSED = FailureType.PROVIDER_REFUSED
PROVIDER_UNAVAILABLE = FailureType.PROVIDER_UNAVAILABLE
REFUND_PENDING = FailureType.REFUND_PENDING
RECAPTURE_REFUSED = FailureType.RECAPTURE_REFUSED
PARTIAL_VOID_UNSUPPORTED = FailureType.PARTIAL_VOID_UNSUPPORTED

# While a refund is pending, look again after this long (plus Temporal's backoff).
SETTLEMENT_POLL_DELAY = timedelta(seconds=2)


class ProviderOperation(StrEnum):
    """What the provider was asked to do for a card tender."""

    REFUND = "refund"
    VOID = "void"


class AccountInput(BaseModel):
    """An input that names the shop's account at the provider."""

    shop_id: str | None = None
    """Whose account at the provider (``PROVIDER_ACCOUNTS``); ``None`` only in activities
    scheduled before release 2, which used the provider's default account."""


class RefundPaymentInput(AccountInput):
    """Give a card payment's money back (refund, or void when only authorized)."""

    refund_id: str
    payment_id: str
    amount: int
    currency: str
    idempotency_key: str
    attempt: int = 1
    """The line's try (the ``n`` of ``{refund_id}/try-{n}``): from the second on, and on
    every retry of an activity, the provider is asked first what the refund id already did."""


class RefundPaymentResult(BaseModel):
    """What the provider did: ``settled`` is false while a refund is pending."""

    operation: ProviderOperation
    provider_reference: str
    settled: bool


class FindRefundInput(BaseModel):
    """Ask the provider what it did for one refund line (by its refund id)."""

    shop_id: str
    refund_id: str
    payment_id: str


class AwaitSettlementInput(AccountInput):
    """Wait until a pending provider refund settles."""

    refund_id: str
    provider_reference: str


class RecaptureOutcome(StrEnum):
    """Whether a canceled payment can be taken again (the provider's check)."""

    RESTORABLE = "restorable"
    """The provider can recapture it now."""
    REAUTH_REQUIRED = "reauth_required"
    """The customer must pay again."""
    NOT_POSSIBLE = "not_possible"
    """It can't be taken back at all."""


class RecaptureCheckInput(AccountInput):
    """Ask the provider about one payment."""

    payment_id: str


class RecaptureCheckResult(BaseModel):
    """The provider's answer, with the end of the recapture window."""

    payment_id: str
    outcome: RecaptureOutcome
    until: datetime | None = None


class RecapturePaymentInput(AccountInput):
    """Take back an amount that was refunded or voided."""

    payment_id: str
    amount: int
    idempotency_key: str


class RecapturePaymentResult(BaseModel):
    """The recapture happened."""

    payment_id: str
    amount: int


class ProviderRefundSettled(BaseModel):
    """The provider's webhook, as the admin hook passes it to the workflow (a signal)."""

    provider_reference: str
    """The provider's refund id (``re_…``)."""
    status: str = "succeeded"
    failure_code: str | None = None
    """Why the provider says the refund failed (``status="failed"``), e.g.
    ``expired_or_canceled_card``; ``None`` otherwise."""


# The provider's answers to a refund of a payment that was only authorized (or whose
# authorization a first attempt already voided): the money goes back by a void instead.
NOT_REFUNDABLE_YET = frozenset({"payment_not_captured", "payment_voided"})


# While a provider call is slow, say so every second: a worker that died mid-call is
# noticed after the workflow's heartbeat timeout (5 s), not the 30 s start-to-close. Calls
# that answer within a second (nearly all) send no heartbeat at all.
HEARTBEAT_EVERY_SECONDS = 1.0

_Self = TypeVar("_Self")
_In = TypeVar("_In")
_Out = TypeVar("_Out")


async def _beat() -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
        activity.heartbeat()


def _with_heartbeats(
    call: Callable[[_Self, _In], Awaitable[_Out]],
) -> Callable[[_Self, _In], Awaitable[_Out]]:
    """Heartbeat while the provider call runs (see ``HEARTBEAT_EVERY_SECONDS``)."""

    @functools.wraps(call)
    async def heartbeating(self: _Self, input: _In) -> _Out:
        beats = asyncio.create_task(_beat())
        try:
            return await call(self, input)
        except ApplicationError:
            raise
        except Exception as err:
            # Only the failures above are understood; anything else would retry forever.
            activity.logger.exception("provider call failed unexpectedly")
            raise ApplicationError(
                f"unexpected {type(err).__name__} around the provider call",
                type=PROVIDER_ERROR,
                non_retryable=True,
            ) from None
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    return heartbeating


@contextlib.contextmanager
def _as_failures(refused: str = PROVIDER_REFUSED, *, declined: str | None = None) -> Iterator[None]:
    """The port's errors as a run's failure types: a refusal is final (``declined`` for a
    declined refund, when given; ``refused`` otherwise), an outage is retried."""
    try:
        yield
    except ProviderRefused as err:
        kind = declined if declined and isinstance(err, RefundDeclined) else refused
        raise ApplicationError(str(err), type=kind, non_retryable=True) from None
    except ProviderUnavailable as err:
        raise ApplicationError(str(err), type=PROVIDER_UNAVAILABLE) from None


class ProviderActivities:
    """Refunds and voids through the payment provider, each with an idempotency key.

    Every call names the shop's own account at the provider (``accounts``: shop id →
    account id, from ``PROVIDER_ACCOUNTS``); a shop without one uses the provider's
    default account, as the dev stack's shops do.
    """

    def __init__(
        self, client: PaymentProviderClient, accounts: Mapping[str, str] | None = None
    ) -> None:
        self._client = client
        self._accounts = dict(accounts or {})

    def _account(self, shop_id: str | None) -> str | None:
        return None if shop_id is None else self._accounts.get(shop_id)

    @activity.defn
    @_with_heartbeats
    async def refund_payment(self, input: RefundPaymentInput) -> RefundPaymentResult:
        """Refund a captured card payment, or void one that was only authorized.

        The idempotency key makes a retry after the provider applied the refund (but
        before we heard back) return the first result instead of refunding twice. A
        provider keeps keys only so long (Stripe: 24 hours), so every retry, and every new
        try of a line, first asks the provider what this refund id already did (the refund
        id travels in the refund's metadata) and never creates a second refund for it.
        """
        account = self._account(input.shop_id)
        # Runs scheduled before release 2 carry no shop: their first attempt sent no
        # metadata, so their retries keep that body (the key would otherwise be "reused").
        tagged = input.shop_id is not None
        listed: list[dict[str, Any]] | None = None
        with _as_failures(declined=REFUND_DECLINED):
            if tagged and (activity.info().attempt > 1 or input.attempt > 1):
                listed = await self._client.list_refunds(input.payment_id, account=account)
                earlier = _in_effect(listed, input.refund_id)
                if earlier is not None:
                    return earlier
            try:
                # Most payments are captured: refund straight away, one round trip.
                refund = await self._client.refund(
                    input.payment_id,
                    input.amount,
                    input.idempotency_key,
                    account=account,
                    metadata={"refund_id": input.refund_id} if tagged else None,
                )
            except ProviderRefused as err:
                if err.code not in NOT_REFUNDABLE_YET:
                    raise
                return await self._void(input)
        activity.logger.info(
            "provider refund %s for %s: %s", refund["id"], input.refund_id, refund["status"]
        )
        if listed is not None and any(
            r.get("id") == refund["id"] and r.get("status") in ("failed", "canceled")
            for r in listed
        ):
            # The provider answered the retried request with its first answer, but the
            # listing just showed that refund failed since (reversed): say so, never succeeded.
            raise ApplicationError(
                f"the provider reports refund {refund['id']} failed after it was made",
                type=FailureType.REFUND_FAILED,
                non_retryable=True,
            )
        if refund.get("currency", input.currency) != input.currency:
            # Stored orders are checked against their payment's currency; this can only be
            # a payment changed behind our back. The money moved: a person must look.
            raise ApplicationError(
                f"refund {refund['id']} is in {refund.get('currency')}, the order in"
                f" {input.currency}",
                type=PAYMENT_MISMATCH,
                non_retryable=True,
            )
        return RefundPaymentResult(
            operation=ProviderOperation.REFUND,
            provider_reference=refund["id"],
            settled=refund["status"] == "succeeded",
        )

    async def _earlier_refund(
        self, input: RefundPaymentInput, account: str | None
    ) -> RefundPaymentResult | None:
        """What the provider already did for this refund id, when that moved or may move
        money (succeeded, or still pending); ``None`` when nothing did."""
        refunds = await self._client.list_refunds(input.payment_id, account=account)
        return _in_effect(refunds, input.refund_id)

    @activity.defn
    @_with_heartbeats
    async def find_refund(self, input: FindRefundInput) -> RefundPaymentResult | None:
        """What the provider did for a refund line, by the refund id in its metadata: a
        refund that succeeded or is pending, or ``None``. Changes nothing."""
        with _as_failures():
            return await self._earlier_refund(
                RefundPaymentInput(
                    shop_id=input.shop_id,
                    refund_id=input.refund_id,
                    payment_id=input.payment_id,
                    amount=0,
                    currency="",
                    idempotency_key="",
                ),
                self._account(input.shop_id),
            )

    async def _void(self, input: RefundPaymentInput) -> RefundPaymentResult:
        """Release an authorization the provider would not refund (never captured)."""
        account = self._account(input.shop_id)
        payment = await self._client.get_payment(input.payment_id, account=account)
        if payment["status"] == "voided":
            # Only a cancellation voids, and only whole authorizations: this is this line's
            # void, made by an earlier attempt whose answer was lost (its key may have
            # expired since, and a second void would be refused).
            return RefundPaymentResult(
                operation=ProviderOperation.VOID,
                provider_reference=f"void:{payment['id']}",
                settled=True,
            )
        partial = payment["status"] == "authorized" and input.amount < payment["amount"]
        if partial and self._client.RELEASES_PART:
            # The honest partial void: capture only what stays sold (Stripe's
            # amount_to_capture), which gives the rest of the authorization back.
            released = await self._client.void(
                input.payment_id, input.idempotency_key, account=account, amount=input.amount
            )
            return RefundPaymentResult(
                operation=ProviderOperation.VOID,
                provider_reference=f"void:{released['id']}",
                settled=True,
            )
        if partial:
            # A void releases the whole authorization: voiding for part of the order
            # would let go of money the customer still owes for the items they keep.
            raise ApplicationError(
                f"payment {input.payment_id} is only authorized; a partial cancellation"
                " can't void part of it: capture it first, or refund this part another way",
                type=PARTIAL_VOID_UNSUPPORTED,
                non_retryable=True,
            )
        voided = await self._client.void(input.payment_id, input.idempotency_key, account=account)
        return RefundPaymentResult(
            operation=ProviderOperation.VOID,
            provider_reference=f"void:{voided['id']}",
            settled=True,
        )

    @activity.defn
    @_with_heartbeats
    async def check_recapture(self, input: RecaptureCheckInput) -> RecaptureCheckResult:
        """Ask whether a refunded or voided payment can be taken again (changes nothing)."""
        with _as_failures():
            answer = await self._client.recapture_check(
                input.payment_id, account=self._account(input.shop_id)
            )
        return RecaptureCheckResult(
            payment_id=input.payment_id,
            outcome=RecaptureOutcome(answer["outcome"]),
            until=answer.get("until"),
        )

    @activity.defn
    @_with_heartbeats
    async def recapture_payment(self, input: RecapturePaymentInput) -> RecapturePaymentResult:
        """Take back money that was refunded or voided, once (idempotency key).

        A retry first reads the payment's ledger: a recapture under this key is this one,
        made by an attempt whose answer was lost (its key may have expired since, and the
        provider would refuse a second recapture of money already taken back).
        """
        account = self._account(input.shop_id)
        with _as_failures(RECAPTURE_REFUSED):
            if activity.info().attempt > 1:
                current = await self._client.get_payment(input.payment_id, account=account)
                if any(
                    entry.get("type") == "recapture"
                    and entry.get("idempotency_key") == input.idempotency_key
                    for entry in current.get("ledger") or []
                ):
                    return RecapturePaymentResult(payment_id=input.payment_id, amount=input.amount)
            payment = await self._client.recapture(
                input.payment_id,
                input.amount,
                input.idempotency_key,
                account=account,
            )
        return RecapturePaymentResult(payment_id=payment["id"], amount=input.amount)

    @activity.defn
    @_with_heartbeats
    async def await_refund_settlement(self, input: AwaitSettlementInput) -> RefundPaymentResult:
        """Succeeds once the pending refund settled; retried by Temporal until then.

        Waiting through activity retries keeps the workflow history short: only the
        final outcome is recorded, however many times the provider was asked.
        """
        with _as_failures():
            refund = await self._client.get_refund(
                input.provider_reference, account=self._account(input.shop_id)
            )
        match refund["status"]:
            case "succeeded":
                return RefundPaymentResult(
                    operation=ProviderOperation.REFUND,
                    provider_reference=refund["id"],
                    settled=True,
                )
            case "declined" | "failed" | "canceled":
                raise ApplicationError(
                    f"refund {refund['id']} was declined: {refund.get('failure_code')}",
                    type=REFUND_DECLINED,
                    non_retryable=True,
                )
            case _:
                raise ApplicationError(
                    f"refund {refund['id']} is still {refund['status']}",
                    type=REFUND_PENDING,
                    next_retry_delay=SETTLEMENT_POLL_DELAY,
                )


def _in_effect(refunds: list[dict[str, Any]], refund_id: str) -> RefundPaymentResult | None:
    """The provider's refund for our ``refund_id`` (its metadata) that moved or may move
    money, newest first: succeeded or pending; ``None`` when none is in effect."""
    for refund in refunds:
        if (refund.get("metadata") or {}).get("refund_id") != refund_id:
            continue
        if refund.get("status") in ("succeeded", "pending"):
            activity.logger.info(
                "provider refund %s for %s found before asking again: %s",
                refund["id"],
                refund_id,
                refund["status"],
            )
            return RefundPaymentResult(
                operation=ProviderOperation.REFUND,
                provider_reference=str(refund["id"]),
                settled=refund["status"] == "succeeded",
            )
    return None
