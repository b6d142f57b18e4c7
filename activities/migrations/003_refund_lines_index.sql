-- Refund lines are looked up by their cancellation: what an order's earlier cancellations
-- refunded (every opening asks), the lines of one cancellation. Without this index each
-- opening scanned every refund line in the store: 12 ms a call after 300 cancellations
-- in the benchmark, growing with the table. Building it blocks writes to refund_lines for
-- as long as it takes; on a large store, create it first with
-- CREATE INDEX CONCURRENTLY refund_lines_by_cancellation ON refund_lines (cancellation_id);
CREATE INDEX IF NOT EXISTS refund_lines_by_cancellation ON refund_lines (cancellation_id);
