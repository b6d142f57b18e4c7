-- The view's `refunded` is a money object from the start: 0 until a refund succeeds, never
-- null (spec 7.1). Views an earlier release stored before acceptance left it null; give
-- them 0 in the cancellation's own currency. (`refundable` of an old request that was never
-- accepted stays null there: what it would have refunded depended on the order back then.
-- Open runs fill it in with their next store write.)
UPDATE cancellations
   SET view = jsonb_set(view, '{refunded}', jsonb_build_object('amount', 0, 'currency', currency))
 WHERE view->'refunded' IS NULL OR view->'refunded' = 'null'::jsonb;
