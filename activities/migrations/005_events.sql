-- Events out (spec 7.4): one event per transition, written in the transition's own
-- transaction; a shop's webhook endpoints; one delivery per endpoint and event, which the
-- relay (starter/relay.py) sends and retries. docs/events.md explains the whole design.
-- Every key is scoped by shop or generated, so no two shops' rows can collide.

-- One row per cancellation that has events: the last sequence number handed out, and when
-- the run closes by itself (a canceled cancellation whose undo window runs out) so the
-- relay can announce `cancellation.closed`. Kept when old events are pruned, so a
-- cancellation's sequence never starts over.
CREATE TABLE event_streams (
    shop_id          text    NOT NULL,
    cancellation_id  text    NOT NULL,
    last_sequence    integer NOT NULL,
    closes_at        timestamptz,
    closed           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (shop_id, cancellation_id)
);
CREATE INDEX event_streams_closing ON event_streams (closes_at) WHERE closes_at IS NOT NULL;

-- Whether an endpoint's event filter takes an event type: the type itself, `cancellation.*`
-- or `*` (domain/events.py checks filters before they are stored).
CREATE FUNCTION webhook_filter_matches(patterns text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p(pattern)
        WHERE p.pattern = event_type OR p.pattern = '*'
           OR (right(p.pattern, 2) = '.*' AND starts_with(event_type, left(p.pattern, -1))))
$$;

-- The events themselves, kept only where an endpoint of the shop takes them (a shop without
-- webhooks stores none; its sequences are counted all the same). `source` is the audit
-- event's key (cancellation_events) or `closed`: what the event announces, once.
CREATE TABLE webhook_events (
    event_id         text PRIMARY KEY,
    shop_id          text    NOT NULL,
    cancellation_id  text    NOT NULL,
    sequence         integer NOT NULL,
    type             text    NOT NULL,
    source           text    NOT NULL,
    occurred_at      timestamptz NOT NULL,
    data             jsonb   NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, cancellation_id, sequence),
    UNIQUE (shop_id, cancellation_id, source)
);
CREATE INDEX webhook_events_by_age ON webhook_events (created_at);

-- A shop's endpoints. The secret signs every delivery; during a rotation the previous one
-- signs too, until previous_expires_at. Secrets are needed in clear to sign (HMAC), so they
-- are kept like the bank accounts: never logged, never returned after they were shown once.
CREATE TABLE webhook_endpoints (
    shop_id              text   NOT NULL,
    endpoint_id          text   NOT NULL,
    url                  text   NOT NULL,
    events               text[] NOT NULL,
    secret               text   NOT NULL,
    secret_created_at    timestamptz NOT NULL,
    previous_secret      text,
    previous_expires_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, endpoint_id)
);

-- One delivery per endpoint and event. While pending, next_attempt_at is when the relay may
-- send it next; a relay that claims it moves next_attempt_at past its lease, so a relay that
-- dies mid-delivery loses nothing: the delivery is due again when the lease runs out.
CREATE TABLE webhook_deliveries (
    delivery_id      text PRIMARY KEY,
    shop_id          text    NOT NULL,
    endpoint_id      text    NOT NULL,
    event_id         text    NOT NULL REFERENCES webhook_events ON DELETE CASCADE,
    cancellation_id  text    NOT NULL,
    sequence         integer NOT NULL,
    status           text    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, endpoint_id, event_id),
    FOREIGN KEY (shop_id, endpoint_id) REFERENCES webhook_endpoints ON DELETE CASCADE
);
-- What the relay claims: due pending deliveries, oldest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- The order check: an earlier pending delivery of the same cancellation to the same endpoint.
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries
    (shop_id, endpoint_id, cancellation_id, sequence) WHERE status = 'pending';
-- The hook's list of an endpoint's deliveries, newest first, by status.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries
    (shop_id, endpoint_id, status, created_at DESC, delivery_id DESC);
-- Pruning.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (status, last_attempt_at)
    WHERE status <> 'pending';
