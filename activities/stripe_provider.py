"""The payment provider port spoken to Stripe (``PAYMENT_PROVIDER=stripe``).

:class:`StripeProviderClient` offers the same calls, answers and exceptions as the sandbox's
:class:`~activities.provider_client.PaymentProviderClient`, so the activities don't know
which provider they talk to. A card tender's ``payment_id`` is a PaymentIntent id; a shop's
account (``PROVIDER_ACCOUNTS``) is a connected account, sent as ``Stripe-Account``.

Our operation → Stripe (the whole table, with outcomes, is in docs/providers.md):

- ``refund`` → ``POST /v1/refunds`` (``payment_intent``, ``amount``, ``metadata``,
  ``Idempotency-Key``) on a captured (``succeeded``) PaymentIntent;
- ``void`` → ``POST /v1/payment_intents/{id}/cancel`` for the whole authorization, or
  ``…/capture`` with ``amount_to_capture`` = authorized − ``amount`` for part of it (the
  honest partial void: the customer is charged only for what stays sold);
- ``recapture_check`` → ``not_possible`` (or ``reauth_required`` when the customer has a
  saved card): Stripe can't restore a canceled PaymentIntent or a refunded charge;
- ``recapture`` → refused (``recapture_unavailable``) without calling Stripe.

Stripe's answers and errors become the port's in :mod:`activities.stripe_wire`.

The adapter checks what a test double (localstripe) doesn't enforce, and what a real
Stripe answer must never slip past: it never asks for more than is refundable, returns the
refund a previous attempt with the same idempotency key already made (found by its
metadata, so a key Stripe forgot after 24 h can't pay twice), and refuses an answer for
another amount, currency or PaymentIntent than asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, TypeVar

import httpx
import stripe

from activities.provider_client import (
    PaymentProviderClient,
    ProviderRefused,
)
from activities.stripe_wire import (
    PAYMENT_INTENT_STATUSES,
    REFUND_STATUSES,
    RETRYABLE_CODES,
    _int,
    _options,
    _params,
    payment_answer,
    provider_error,
    redact,
    refund_answer,
)

__all__ = [
    "DEFAULT_API_BASE",
    "IDEMPOTENCY_METADATA",
    "PAYMENT_INTENT_STATUSES",
    "REFUND_STATUSES",
    "REQUEST_TIMEOUT",
    "RETRYABLE_CODES",
    "TEST_CARD",
    "StripeProviderClient",
    "payment_answer",
    "provider_error",
    "redact",
    "refund_answer",
]

DEFAULT_API_BASE = "https://api.stripe.com"

# Stripe answers nearly every call within a second; a slower one is retried by Temporal
# with the same idempotency key, so giving up early never pays twice.
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=3.0)

TEST_CARD = "pm_card_visa"
"""The test-mode card :meth:`StripeProviderClient.create_payment` pays with (demos, tests)."""

IDEMPOTENCY_METADATA = "idempotency_key"
"""Refund metadata holding the key of the request that made it: a retry finds its refund
by it even after Stripe forgot the key (24 h), or where a test double ignores keys."""
_T = TypeVar("_T")


class StripeProviderClient(PaymentProviderClient):
    RELEASES_PART: ClassVar[bool] = True
    """The provider port over Stripe's API, with the official ``stripe`` library.

    It subclasses the sandbox's client only so that the activities and the hook, which
    are typed against it, take it as it is; it overrides every public call and shares no
    state with it (a test checks that no call of the sandbox's is inherited).

    Args:
        api_key: A secret or restricted key (``sk_test_…`` in test mode).
        api_base: Where Stripe's API is; tests point it at localstripe.
        http_client: The library's HTTP client; by default its async HTTPX client.
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        # Not calling the sandbox client's __init__: it would open a pool to nowhere.
        self._http_client = http_client or stripe.HTTPXClient(timeout=REQUEST_TIMEOUT)
        # No retries in the library: Temporal retries the activity with the same key, and
        # a 409 must reach the port as ProviderUnavailable, not be slept on here.
        self._stripe = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self._http_client,
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http_client.close_async()  # type: ignore[no-untyped-call]  # untyped in stripe

    # -- reads -----------------------------------------------------------------------------

    async def get_payment(self, payment_id: str, *, account: str | None = None) -> dict[str, Any]:
        """The PaymentIntent as the port's payment (id, amount, currency, status, …)."""
        return payment_answer(await self._raw_payment_intent(payment_id, account))

    async def get_refund(self, refund_id: str, *, account: str | None = None) -> dict[str, Any]:
        """A refund's current state (pending ones settle later)."""
        refund = await self._call(
            f"GET refund {refund_id}",
            self._stripe.v1.refunds.retrieve_async(refund_id, options=_options(account=account)),
        )
        return refund_answer(refund.to_dict())

    async def list_refunds(
        self, payment_id: str, *, account: str | None = None
    ) -> list[dict[str, Any]]:
        """Every refund of the PaymentIntent, newest first, each with its metadata.

        The product finds the refund it made by the ``refund_id`` it put in the metadata,
        e.g. before retrying with a key Stripe may have forgotten.
        """
        return [refund_answer(r) for r in await self._refunds_of(payment_id, account)]

    async def recapture_check(
        self, payment_id: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """``{outcome, until}``: never ``restorable`` on Stripe.

        A canceled PaymentIntent can't be confirmed again and a refund can't be reversed,
        so the money comes back only by a new payment: ``reauth_required`` where the
        PaymentIntent's customer has a saved card to charge off-session, else
        ``not_possible``.
        """
        intent = await self._raw_payment_intent(payment_id, account)
        customer = intent.get("customer")
        if isinstance(customer, dict):
            customer = customer.get("id")
        if isinstance(customer, str) and customer:
            methods = await self._call(
                f"GET payment methods of {payment_id}'s customer",
                self._stripe.v1.customers.payment_methods.list_async(
                    customer, {"type": "card", "limit": 1}, options=_options(account=account)
                ),
            )
            if methods.to_dict().get("data"):
                return {"outcome": "reauth_required", "until": None}
        return {"outcome": "not_possible", "until": None}

    # -- money movements -------------------------------------------------------------------

    async def create_payment(
        self,
        amount: int,
        currency: str,
        *,
        capture: bool = True,
        behavior: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        account: str | None = None,
    ) -> dict[str, Any]:
        """Pay with Stripe's test card (demos and tests; the storefront does this live).

        ``capture=False`` leaves the PaymentIntent authorized (``capture_method=manual``).
        The sandbox's ``behavior`` has no Stripe equivalent and is refused.
        """
        if behavior:
            raise ProviderRefused(
                "Stripe has no test behaviors; use the sandbox to script refund outcomes",
                code="behavior_unsupported",
            )
        intent = await self._call(
            "POST payment_intents",
            self._stripe.v1.payment_intents.create_async(
                # payment_method_types: localstripe knows no automatic payment methods, and
                # Stripe confirms a card-only intent without a return URL.
                _params(
                    {
                        "amount": amount,
                        "currency": currency.lower(),
                        "payment_method": TEST_CARD,
                        "payment_method_types": ["card"],
                        "confirm": True,
                        "capture_method": "automatic" if capture else "manual",
                    }
                ),
                options=_options(idempotency_key, account),
            ),
        )
        return payment_answer(intent.to_dict())

    async def refund(
        self,
        payment_id: str,
        amount: int,
        idempotency_key: str,
        *,
        account: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Refund (part of) a captured PaymentIntent; the answer is the refund.

        Raises:
            ProviderRefused: ``payment_not_captured`` (only authorized: void it instead),
                ``payment_voided`` (canceled), ``amount_exceeds_refundable``, or
                ``refund_mismatch`` when Stripe answers for another amount, currency or
                PaymentIntent than asked (the money may have moved: a person must look).
        """
        if amount <= 0:
            raise ProviderRefused(f"refund of {amount}: must be positive", code="invalid_amount")
        intent = await self._raw_payment_intent(payment_id, account)
        match intent.get("status"):
            case "succeeded":
                pass
            case "requires_capture":
                raise ProviderRefused(
                    f"payment {payment_id} is only authorized: void it instead",
                    code="payment_not_captured",
                    status=400,
                )
            case "canceled":
                raise ProviderRefused(
                    f"payment {payment_id} was canceled: nothing to refund",
                    code="payment_voided",
                    status=400,
                )
            case other:
                raise ProviderRefused(
                    f"payment {payment_id} is {other}: no money was taken to refund",
                    code="payment_not_captured",
                    status=400,
                )
        # A previous attempt with this key may have made the refund already (its answer
        # lost, or the key forgotten by Stripe): hand back that one, never a second.
        for earlier in await self._refunds_of(payment_id, account):
            if (earlier.get("metadata") or {}).get(IDEMPOTENCY_METADATA) == idempotency_key:
                return self._checked_refund(earlier, intent, amount)
        payment = payment_answer(intent)
        refundable = payment["refundable_amount"]
        if amount > refundable:
            raise ProviderRefused(
                f"refund of {amount} for payment {payment_id}: only {refundable}"
                f" {payment['currency']} is refundable",
                code="amount_exceeds_refundable",
                status=400,
            )
        refund = await self._call(
            f"POST refund for {payment_id}",
            self._stripe.v1.refunds.create_async(
                {
                    "payment_intent": payment_id,
                    "amount": amount,
                    "metadata": {**(metadata or {}), IDEMPOTENCY_METADATA: idempotency_key},
                },
                options=_options(idempotency_key, account),
            ),
        )
        return self._checked_refund(refund.to_dict(), intent, amount)

    async def void(
        self,
        payment_id: str,
        idempotency_key: str,
        *,
        account: str | None = None,
        amount: int | None = None,
    ) -> dict[str, Any]:
        """Release an authorization: all of it (cancel), or ``amount`` of it (capture the rest).

        The answer is the payment plus ``released``, the amount given back. Repeating a
        void that already happened answers the same, so a retry after a lost answer is
        harmless.

        Raises:
            ProviderRefused: ``payment_already_captured`` (refund it instead),
                ``amount_exceeds_refundable`` (more than authorized).
        """
        intent = await self._raw_payment_intent(payment_id, account)
        authorized = _int(intent.get("amount_capturable")) or _int(intent.get("amount"))
        status = intent.get("status")
        if amount is not None and amount <= 0:
            raise ProviderRefused(f"void of {amount}: must be positive", code="invalid_amount")
        if status == "canceled":
            # Already released whole (by us, before an answer was lost).
            return {**payment_answer(intent), "released": _int(intent.get("amount"))}
        if status == "succeeded":
            payment = payment_answer(intent)
            kept = _int(intent.get("amount")) - (amount or 0)
            if amount is not None and payment["captured_amount"] == kept:
                # The partial void's capture already happened (a retry).
                return {**payment, "released": amount}
            raise ProviderRefused(
                f"payment {payment_id} is captured: refund it instead",
                code="payment_already_captured",
                status=400,
            )
        if status != "requires_capture":
            raise ProviderRefused(
                f"payment {payment_id} is {status}: there is no authorization to release",
                code="payment_not_authorized",
                status=400,
            )
        if amount is not None and amount > authorized:
            raise ProviderRefused(
                f"void of {amount} for payment {payment_id}: only {authorized} is authorized",
                code="amount_exceeds_refundable",
                status=400,
            )
        options = _options(idempotency_key, account)
        if amount is None or amount == authorized:
            canceled = await self._call(
                f"POST cancel {payment_id}",
                # No cancellation_reason: localstripe refuses every parameter of cancel.
                self._stripe.v1.payment_intents.cancel_async(payment_id, options=options),
            )
            return {**payment_answer(canceled.to_dict()), "released": authorized}
        captured = await self._call(
            f"POST capture {payment_id}",
            self._stripe.v1.payment_intents.capture_async(
                payment_id, {"amount_to_capture": authorized - amount}, options=options
            ),
        )
        return {**payment_answer(captured.to_dict()), "released": amount}

    async def recapture(
        self, payment_id: str, amount: int, idempotency_key: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """Always refused (``recapture_unavailable``): Stripe can't take back a refund or
        restore a canceled PaymentIntent; the customer pays again (the repayment path)."""
        raise ProviderRefused(
            f"payment {payment_id}: Stripe can't recapture a refunded or canceled payment;"
            " the customer must pay again",
            code="recapture_unavailable",
            status=400,
        )

    # -- plumbing --------------------------------------------------------------------------

    async def _raw_payment_intent(self, payment_id: str, account: str | None) -> dict[str, Any]:
        intent = await self._call(
            f"GET payment {payment_id}",
            self._stripe.v1.payment_intents.retrieve_async(
                payment_id, {"expand": ["latest_charge"]}, options=_options(account=account)
            ),
        )
        answer = intent.to_dict()
        if answer.get("id") != payment_id:
            raise ProviderRefused(
                f"GET payment {payment_id}: Stripe answered with {answer.get('id')!r}",
                code="unexpected_answer",
            )
        return answer

    async def _refunds_of(self, payment_id: str, account: str | None) -> list[dict[str, Any]]:
        refunds: list[dict[str, Any]] = []
        params: dict[str, Any] = {"payment_intent": payment_id, "limit": 100}
        while True:
            page = await self._call(
                f"GET refunds of {payment_id}",
                self._stripe.v1.refunds.list_async(
                    _params(params), options=_options(account=account)
                ),
            )
            data = page.to_dict()
            batch = data.get("data")
            if not isinstance(batch, list):
                raise ProviderRefused(
                    f"GET refunds of {payment_id}: the answer has no list", code="unexpected_answer"
                )
            refunds += batch
            if not data.get("has_more") or not batch:
                return refunds
            params = {**params, "starting_after": batch[-1]["id"]}

    def _checked_refund(
        self, refund: dict[str, Any], intent: dict[str, Any], amount: int
    ) -> dict[str, Any]:
        """The port's refund, once it is the refund we asked for."""
        answer = refund_answer(refund)
        expected_currency = str(intent.get("currency", "")).upper()
        problems = []
        if answer["amount"] != amount:
            problems.append(f"amount {answer['amount']} instead of {amount}")
        if answer["currency"] != expected_currency:
            problems.append(f"currency {answer['currency']} instead of {expected_currency}")
        if answer["payment_id"] not in (None, intent["id"]):
            problems.append(f"payment {answer['payment_id']} instead of {intent['id']}")
        if problems:
            raise ProviderRefused(
                f"Stripe answered refund {answer['id']} with {', '.join(problems)}:"
                " check it in the Stripe dashboard before anything else is paid",
                code="refund_mismatch",
            )
        return answer

    async def _call(self, what: str, call: Awaitable[_T]) -> _T:
        """Await one Stripe call; its errors become the port's exceptions."""
        try:
            return await call
        except stripe.StripeError as err:
            raise provider_error(what, err) from None
