-- Stripe's webhook events the hook has acted on (PAYMENT_PROVIDER=stripe).
-- Stripe delivers an event at least once, late and out of order; the hook acts on an event
-- id once and answers a redelivery "ignored". Rows are small and kept for the audit trail.
CREATE TABLE IF NOT EXISTS stripe_events (
    event_id    text PRIMARY KEY,
    type        text NOT NULL,
    account     text,
    received_at timestamptz NOT NULL DEFAULT now()
);
