"""The hook's routes under ``/v1/shops/{shop_id}``, each with a body that would be valid for
a victim's data: the tables the authorization and tenancy tests walk."""

from __future__ import annotations

from typing import Any

ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}

# Every route under /v1/shops/{shop_id} (the route table, both addressings), with a body that
# would be valid for the victim's data, so only the token decides the answer.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "{o}/cancellation", {"initiated_by": "customer", "channel": "my_account"}),
    ("GET", "{o}/cancellation", None),
    ("POST", "{o}/cancellation/quote", {}),
    ("POST", "{o}/cancellation/accept", ACCEPT),
    ("POST", "{o}/cancellation/reject", {"reason": "no"}),
    ("POST", "{o}/cancellation/withdraw", None),
    ("POST", "{o}/cancellation/refunds/{r}/confirm", {"reference": "ref-1"}),
    ("POST", "{o}/cancellation/refunds/{r}/retry", {"method": "credits"}),
    ("POST", "{o}/cancellation/undo", {"reason": "kept"}),
    ("POST", "{o}/cancellation/repayment", {"reference": "p-1", "amount": 100}),
    ("GET", "{o}/cancellations", None),
    ("GET", "{c}", None),
    ("POST", "{c}/quote", {}),
    ("POST", "{c}/accept", ACCEPT),
    ("POST", "{c}/reject", {"reason": "no"}),
    ("POST", "{c}/withdraw", None),
    ("POST", "{c}/refunds/{r}/confirm", {"reference": "ref-1"}),
    ("POST", "{c}/refunds/{r}/retry", {"method": "credits"}),
    ("POST", "{c}/undo", {"reason": "kept"}),
    ("POST", "{c}/repayment", {"reference": "p-1", "amount": 100}),
    ("GET", "{s}/cancellations", None),
    ("PUT", "{o}", None),  # the body is the victim's own order document
    ("GET", "{o}", None),
    ("POST", "{o}/fulfillment", {"status": "preparing"}),
    ("PUT", "{s}/settings", {"customer_cancellation_requests": False}),
    ("GET", "{s}/settings", None),
    ("PUT", "{s}/stock/sku-mug", {"available": 0}),
    ("GET", "{s}/stock/sku-mug", None),
    ("PUT", "{s}/customers/cust-1", {"points": 999, "credits": 999}),
    ("GET", "{s}/customers/cust-1", None),
    ("PUT", "{s}/webhooks/erp", {"url": "https://erp.example.com/hooks"}),
    ("GET", "{s}/webhooks/erp", None),
    ("GET", "{s}/webhooks", None),
    ("DELETE", "{s}/webhooks/erp", None),
    ("POST", "{s}/webhooks/erp/rotate-secret", None),
    ("GET", "{s}/webhooks/erp/deliveries", None),
    ("POST", "{s}/webhooks/erp/deliveries/dlv_" + "0" * 32 + "/redeliver", None),
]

BY_ID = [route for route in ROUTES if "{c}" in route[1] or "{r}" in route[1]]
"""The routes that name a cancellation or a refund by id."""
