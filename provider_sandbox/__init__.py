"""A card payment provider sandbox: a separate HTTP service with durable state.

It behaves like a payment service provider for the order-cancellation product and its
tests, with a real provider's rules (Stripe's defaults): payments with a ledger,
refunds (succeeding, declined, pending for as long as asked, failing after success) with
the caller's metadata and a list per payment, voids, recapture, idempotency keys on every
POST (kept 24 hours, `409 idempotency_key_in_use` while one is being processed), signed
webhooks (`refund.succeeded`, `refund.failed`; late, twice and out of order on request),
injectable faults (payment creation included; callers send it again with the same
`Idempotency-Key`, as `starter.card_payments` does), and a provider clock that tests can
speed up or move forward. Run it with
`python -m provider_sandbox`, or build the ASGI app in process with `create_app`.
"""

from provider_sandbox.app import create_app

__all__ = ["create_app"]
