-- Bulk cancellation (spec 7.6): one row per job, one row per matched order with its outcome.
-- An order's row is written before its cancellation is started ('pending', naming the
-- cancellation id it is about to start) and completed after: a job that a worker crash or
-- continue-as-new restarts finds the row and never starts a second cancellation for the order.

CREATE TABLE bulk_cancellations (
    shop_id            text    NOT NULL,
    bulk_id            text    NOT NULL,
    workflow_id        text    NOT NULL,
    sku                text    NOT NULL,
    reason_code        text    NOT NULL,
    reason             text    NOT NULL DEFAULT '',
    refund_method      text    NOT NULL,
    restock            boolean NOT NULL,
    notify_customer    boolean NOT NULL,
    actor              text    NOT NULL,
    status             text    NOT NULL CHECK (status IN ('running', 'completed', 'stopped')),
    stop_requested_at  timestamptz,
    created_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    PRIMARY KEY (shop_id, bulk_id)
);

CREATE TABLE bulk_cancellation_items (
    shop_id          text NOT NULL,
    bulk_id          text NOT NULL,
    order_id         text NOT NULL,
    outcome          text NOT NULL
        CHECK (outcome IN ('pending', 'started', 'already_open', 'refused')),
    cancellation_id  text,
    items            jsonb,
    error_code       text,
    message          text,
    at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, bulk_id, order_id),
    FOREIGN KEY (shop_id, bulk_id) REFERENCES bulk_cancellations
);

-- The job pages through a shop's orders holding the SKU by order id (a keyset cursor).
-- Building it blocks writes to order_items for as long as it takes; on a large store,
-- create it first with
-- CREATE INDEX CONCURRENTLY order_items_by_sku ON order_items (shop_id, sku, order_id);
CREATE INDEX IF NOT EXISTS order_items_by_sku ON order_items (shop_id, sku, order_id);
-- A page first finishes the orders an attempt that died was starting.
CREATE INDEX bulk_cancellation_items_pending ON bulk_cancellation_items (shop_id, bulk_id)
    WHERE outcome = 'pending';
