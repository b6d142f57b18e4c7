-- The payment provider's webhook events the admin hook has acted on (spec 7.2): an event id
-- is acted on once per provider account, however often the provider delivers it. A row
-- with handled_at NULL is an event being acted on right now; a request that died while
-- holding one leaves it to a redelivery after a short lease. Rows are deleted after 7 days,
-- long after any provider stops redelivering.
CREATE TABLE provider_events (
    event_id     text NOT NULL,
    account      text NOT NULL,  -- '' for the provider's default account
    received_at  timestamptz NOT NULL DEFAULT now(),
    handled_at   timestamptz,
    PRIMARY KEY (event_id, account)
);
CREATE INDEX provider_events_by_age ON provider_events (received_at);

-- A refund event names the provider's refund id; this finds the cancellation whose line it
-- is, even one that is no longer the order's latest (a refund can fail after that
-- cancellation completed and another began).
CREATE INDEX refund_lines_by_provider_reference ON refund_lines (provider_reference)
    WHERE provider_reference IS NOT NULL;
