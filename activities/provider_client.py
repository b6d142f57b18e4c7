"""A small HTTP client for the payment provider (the sandbox speaks its API).

Exception tree::

    ProviderError                 anything the provider said or failed to say
    ├── ProviderUnavailable       5xx, timeouts, connection errors, and ``409
    │                             idempotency_key_in_use`` (the same key is still being
    │                             processed): try again later, with the same key
    └── ProviderRefused           any other 4xx answer: asking again changes nothing
        └── RefundDeclined        the card network declined the refund
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx

ACCOUNT_HEADER = "Provider-Account"
"""Names the shop's account at the provider (Stripe's ``Stripe-Account``); without it the
provider's default account answers, which only the dev stack uses."""

KEY_IN_USE = "idempotency_key_in_use"
"""The provider's ``409`` while a request with the same idempotency key is in flight (e.g.
our own earlier attempt, abandoned on a timeout, still running there). Nothing was decided:
the answer to wait for is the first request's, so this is retried, never a failure."""

# The sandbox can hang on purpose; a refund that takes longer than this is retried by
# Temporal with the same idempotency key, so giving up early never pays twice.
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class ProviderError(Exception):
    """The provider did not do what we asked."""

    def __init__(self, message: str, *, code: str = "provider_error", status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class ProviderUnavailable(ProviderError):
    """The provider did not answer usefully; the same request may succeed later."""


class ProviderRefused(ProviderError):
    """The provider refused the request; repeating it would be refused again."""


class RefundDeclined(ProviderRefused):
    """The refund was declined for good (e.g. the card account is closed)."""


def segment(value: str) -> str:
    """``value`` as one URL path segment: ``/``, ``?``, ``#``, ``..`` and control
    characters can't change which resource a call reaches."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


class PaymentProviderClient:
    """Calls the provider's REST API; every POST carries an idempotency key.

    Every call names the shop's account at the provider (``account``, sent as
    :data:`ACCOUNT_HEADER`); a payment of another account is not found there.
    """

    RELEASES_PART: ClassVar[bool] = False
    """Whether ``void(amount=…)`` can give back part of an authorization and keep the rest
    (Stripe: capture the rest); the sandbox voids whole authorizations only."""

    def __init__(self, base_url: str, *, http: httpx.AsyncClient | None = None) -> None:
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT)

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def get_payment(self, payment_id: str, *, account: str | None = None) -> dict[str, Any]:
        """The payment with its status, amounts and ledger."""
        return await self._request("GET", f"/v1/payments/{segment(payment_id)}", account=account)

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
        """Create a card payment (used by demos and tests; the storefront does this live)."""
        body = {"amount": amount, "currency": currency, "capture": capture}
        if behavior:
            body["behavior"] = behavior
        return await self._request("POST", "/v1/payments", body, idempotency_key, account=account)

    async def refund(
        self,
        payment_id: str,
        amount: int,
        idempotency_key: str,
        *,
        account: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Refund (part of) a captured payment; the answer is the refund object.

        ``metadata`` (e.g. ``{"refund_id": …}``) is stored with the refund, so
        :meth:`list_refunds` can tell which refund is ours. It is sent only when given: a
        retry of an attempt that sent none must send the same body, or the provider refuses
        the key as reused.
        """
        body: dict[str, Any] = {"amount": amount}
        if metadata is not None:
            body["metadata"] = metadata
        return await self._request(
            "POST",
            f"/v1/payments/{segment(payment_id)}/refunds",
            body,
            idempotency_key,
            account=account,
        )

    async def list_refunds(
        self, payment_id: str, *, account: str | None = None
    ) -> list[dict[str, Any]]:
        """Every refund of a payment, newest first, each with its status and metadata.

        This is how to learn what an idempotency key that may have expired already did.
        """
        answer = await self._request(
            "GET", f"/v1/payments/{segment(payment_id)}/refunds", account=account
        )
        refunds = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(refunds, list) or not all(isinstance(r, dict) for r in refunds):
            raise ProviderUnavailable(
                f"GET /v1/payments/{segment(payment_id)}/refunds: unreadable answer",
                status=200,
            )
        return refunds

    async def get_refund(self, refund_id: str, *, account: str | None = None) -> dict[str, Any]:
        """A refund's current state (pending ones settle later)."""
        return await self._request("GET", f"/v1/refunds/{segment(refund_id)}", account=account)

    async def void(
        self,
        payment_id: str,
        idempotency_key: str,
        *,
        account: str | None = None,
        amount: int | None = None,
    ) -> dict[str, Any]:
        """Void an authorized, uncaptured payment, whole; the answer is the payment.

        The sandbox can't release part of an authorization (``amount``): see
        :attr:`RELEASES_PART`.
        """
        if amount is not None:
            raise ProviderRefused(
                "the sandbox voids whole authorizations only", code="partial_void_unsupported"
            )
        return await self._request(
            "POST", f"/v1/payments/{segment(payment_id)}/void", {}, idempotency_key, account=account
        )

    async def recapture_check(
        self, payment_id: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """Whether a refunded or voided payment can be taken again: ``{outcome, until}``."""
        return await self._request(
            "GET", f"/v1/payments/{segment(payment_id)}/recapture", account=account
        )

    async def recapture(
        self, payment_id: str, amount: int, idempotency_key: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """Take back money that was refunded or voided."""
        return await self._request(
            "POST",
            f"/v1/payments/{segment(payment_id)}/recapture",
            {"amount": amount},
            idempotency_key,
            account=account,
        )

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        account: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if account is not None:
            headers[ACCOUNT_HEADER] = account
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as err:
            # Our own request can't be sent as it is: asking again can't help.
            raise ProviderRefused(
                f"{method} {path}: the request can't be sent ({type(err).__name__})",
                code="invalid_request",
            ) from err
        except httpx.HTTPError as err:
            raise ProviderUnavailable(
                f"{method} {path}: {type(err).__name__}", code="provider_unavailable"
            ) from err
        if response.status_code >= 500:
            raise ProviderUnavailable(
                f"{method} {path}: provider answered {response.status_code}",
                code="provider_unavailable",
                status=response.status_code,
            )
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as err:
            raise ProviderUnavailable(
                f"{method} {path}: unreadable answer", status=response.status_code
            ) from err
        if response.status_code >= 400:
            error = payload.get("error") or {}
            code = str(error.get("code", "provider_refused"))
            message = f"{method} {path}: {code}: {error.get('message', '')}".rstrip(": ")
            if response.status_code == 409 and code == KEY_IN_USE:
                raise ProviderUnavailable(message, code=code, status=response.status_code)
            kind = RefundDeclined if code == "refund_declined" else ProviderRefused
            raise kind(message, code=code, status=response.status_code)
        return payload
