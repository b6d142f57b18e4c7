-- The store database: orders, payments by tender, balances, stock, cancellations,
-- refund lines, the audit trail and the notification outbox.
-- Every table an activity writes has a natural or idempotency key, so a retried
-- activity finds its own earlier write instead of applying it twice.

CREATE TABLE shops (
    shop_id                         text PRIMARY KEY,
    customer_cancellation_requests  boolean  NOT NULL DEFAULT true,
    request_reminder_after          interval NOT NULL DEFAULT interval '24 hours',
    undo_window                     interval NOT NULL DEFAULT interval '30 days',
    repayment_window                interval NOT NULL DEFAULT interval '7 days',
    updated_at                      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    shop_id      text   NOT NULL,
    customer_id  text   NOT NULL,
    points       bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    credits      bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, customer_id)
);

CREATE TABLE orders (
    shop_id                     text   NOT NULL,
    order_id                    text   NOT NULL,
    customer_id                 text   NOT NULL,
    currency                    char(3) NOT NULL,
    status                      text   NOT NULL,
    status_before_cancellation  text,
    shipping_fee                bigint NOT NULL CHECK (shipping_fee >= 0),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, order_id)
);

CREATE TABLE order_items (
    shop_id            text    NOT NULL,
    order_id           text    NOT NULL,
    item_id            text    NOT NULL,
    position           integer NOT NULL,
    sku                text    NOT NULL,
    quantity           integer NOT NULL CHECK (quantity > 0),
    unit_price         bigint  NOT NULL CHECK (unit_price >= 0),
    canceled_quantity  integer NOT NULL DEFAULT 0 CHECK (canceled_quantity >= 0),
    PRIMARY KEY (shop_id, order_id, item_id),
    FOREIGN KEY (shop_id, order_id) REFERENCES orders ON DELETE CASCADE
);

CREATE TABLE tenders (
    shop_id     text    NOT NULL,
    order_id    text    NOT NULL,
    tender_id   text    NOT NULL,
    position    integer NOT NULL,
    kind        text    NOT NULL,
    amount      bigint  NOT NULL CHECK (amount >= 0),
    payment_id  text,
    PRIMARY KEY (shop_id, order_id, tender_id),
    FOREIGN KEY (shop_id, order_id) REFERENCES orders ON DELETE CASCADE
);

CREATE TABLE stock (
    shop_id    text    NOT NULL,
    sku        text    NOT NULL,
    available  integer NOT NULL CHECK (available >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, sku)
);

-- One row per stock or balance change made by a cancellation; the key makes it happen once.
CREATE TABLE stock_movements (
    movement_key  text PRIMARY KEY,
    shop_id       text    NOT NULL,
    sku           text    NOT NULL,
    delta         integer NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE balance_movements (
    movement_key  text PRIMARY KEY,
    shop_id       text   NOT NULL,
    customer_id   text   NOT NULL,
    balance       text   NOT NULL CHECK (balance IN ('points', 'credits')),
    delta         bigint NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

-- Personal data: read only to show a masked number, or by the merchant's own staff.
CREATE TABLE bank_accounts (
    ref             text PRIMARY KEY,
    shop_id         text NOT NULL,
    bank            text NOT NULL,
    account_number  text NOT NULL,
    holder          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cancellations (
    cancellation_id  text PRIMARY KEY,
    shop_id          text    NOT NULL,
    order_id         text    NOT NULL,
    seq              integer NOT NULL,
    status           text    NOT NULL,
    initiated_by     text    NOT NULL,
    channel          text    NOT NULL,
    reason_code      text,
    reason           text    NOT NULL DEFAULT '',
    customer_note    text,
    refund_method    text,
    items            jsonb,
    currency         char(3) NOT NULL,
    refundable       bigint,
    refunded         bigint  NOT NULL DEFAULT 0,
    needs_attention  text,
    view             jsonb   NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    canceled_at      timestamptz,
    undo_until       timestamptz,
    UNIQUE (shop_id, order_id, seq),
    FOREIGN KEY (shop_id, order_id) REFERENCES orders
);
CREATE INDEX cancellations_by_shop ON cancellations (shop_id, created_at DESC, cancellation_id DESC);
CREATE INDEX cancellations_by_shop_status ON cancellations (shop_id, status, created_at DESC);

CREATE TABLE refund_lines (
    refund_id               text PRIMARY KEY,
    cancellation_id         text   NOT NULL REFERENCES cancellations,
    tender_id               text   NOT NULL,
    tender_kind             text   NOT NULL,
    method                  text   NOT NULL,
    channel                 text   NOT NULL,
    amount                  bigint NOT NULL CHECK (amount >= 0),
    status                  text   NOT NULL,
    provider_reference      text,
    failure                 text,
    bank_account_ref        text,
    confirmation_reference  text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- The audit trail (rule 12): who, when, what and why.
CREATE TABLE cancellation_events (
    event_key        text PRIMARY KEY,
    cancellation_id  text NOT NULL REFERENCES cancellations,
    shop_id          text NOT NULL,
    at               timestamptz NOT NULL,
    event            text NOT NULL,
    actor            text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX cancellation_events_by_cancellation ON cancellation_events (cancellation_id, at);

-- Notifications (rule 13) for a mailer to read and mark sent.
CREATE TABLE outbox (
    message_key      text PRIMARY KEY,
    shop_id          text NOT NULL,
    cancellation_id  text,
    recipient        text NOT NULL CHECK (recipient IN ('customer', 'merchant')),
    customer_id      text,
    template         text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE sent_at IS NULL;
