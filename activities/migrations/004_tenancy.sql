-- Many shops in one deployment (release 2).

-- The run a cancellation's id names. Reads and actions address this run, never just the
-- workflow id: a workflow id can be reused by a later run (and, for the ids of release 1,
-- by another shop's cancellation), a run id can't.
ALTER TABLE cancellations ADD COLUMN IF NOT EXISTS run_id text;

-- The Idempotency-Key of the request that started a cancellation: a start repeated after
-- the hook lost its answer (a crash between starting and recording, a lease that ran out)
-- finds the cancellation it started instead of starting the next one.
ALTER TABLE cancellations ADD COLUMN IF NOT EXISTS start_key text;
CREATE UNIQUE INDEX IF NOT EXISTS cancellations_by_start_key
    ON cancellations (shop_id, start_key) WHERE start_key IS NOT NULL;

-- The order as a cancellation opened it: a retried opening (its worker died after the first
-- attempt committed, and an acceptance may have canceled the items since) answers with it.
ALTER TABLE cancellations ADD COLUMN IF NOT EXISTS opened_order jsonb;

-- A customer's points and credits are in one currency: set by PUT …/customers/{id}, or by
-- the first order that pays with them. NULL until then.
ALTER TABLE customers ADD COLUMN IF NOT EXISTS currency char(3);

-- Restocking adds to stock without a ceiling in the product; a 64-bit counter can't
-- overflow from any sequence of bounded quantities (PUT caps stock at 10^9, an item's
-- quantity at 10^6), so a restock or the reversal of a lapsed repayment never fails a run.
ALTER TABLE stock ALTER COLUMN available TYPE bigint;
ALTER TABLE stock_movements ALTER COLUMN delta TYPE bigint;
