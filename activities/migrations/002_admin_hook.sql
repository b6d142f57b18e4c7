-- The admin hook: bearer tokens kept as hashes, and the answers to idempotent requests.

-- Production tokens (ADMIN_HOOK_TOKENS is for the dev stack and tests). Only the SHA-256 of a
-- token is stored, so a copy of the database doesn't let anyone act as a shop.
CREATE TABLE admin_tokens (
    token_hash  text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    shop_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_tokens_by_shop ON admin_tokens (shop_id);

-- One row per Idempotency-Key a shop used: the request's fingerprint and, once the first
-- request finished, its answer. status IS NULL while that first request is still running.
CREATE TABLE idempotency_keys (
    shop_id      text NOT NULL,
    key          text NOT NULL,
    method       text NOT NULL,
    path         text NOT NULL,
    body_hash    text NOT NULL,
    status       integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (shop_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The provider's webhooks name a payment; this finds the order paid with it.
CREATE INDEX tenders_by_payment ON tenders (payment_id) WHERE payment_id IS NOT NULL;
