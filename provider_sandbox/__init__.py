"""A card payment provider sandbox: a separate HTTP service with durable state.

It behaves like a payment service provider for the order-cancellation product and its
tests: payments with a ledger, refunds (succeeding, declined or pending), voids, recapture,
idempotency keys on every POST, signed webhooks and injectable faults (`PUT /v1/faults`
strikes every POST, payment creation included; callers send it again with the same
`Idempotency-Key`, as `starter.card_payments` does). Run it with `python -m provider_sandbox`,
or build the ASGI app in process with `create_app`.
"""

from provider_sandbox.app import create_app

__all__ = ["create_app"]
