"""The names that workers, clients and operators agree on.

Changing any of these breaks running workflows or the people who search for them.
"""

from typing import Final

WORKFLOW_TYPE: Final = "OrderCancellation"
TASK_QUEUE: Final = "order-cancellations"
# Provider calls may run on their own queue so they can be scaled and rate-limited apart.
PROVIDER_TASK_QUEUE: Final = "payment-provider"

# Search attributes (registered by the dev stack; see README for production namespaces).
SA_SHOP_ID: Final = "ShopId"
SA_ORDER_ID: Final = "OrderId"
SA_CANCELLATION_STATUS: Final = "CancellationStatus"
SA_INITIATED_BY: Final = "InitiatedBy"
SA_NEEDS_ATTENTION: Final = "NeedsAttention"
SA_REFUND_AMOUNT: Final = "RefundAmount"
# A bulk cancellation job's runs (workflow type BulkCancellation), beside ShopId.
SA_BULK_ID: Final = "BulkId"

KEYWORD_SEARCH_ATTRIBUTES: Final = (
    SA_SHOP_ID,
    SA_ORDER_ID,
    SA_CANCELLATION_STATUS,
    SA_INITIATED_BY,
    SA_NEEDS_ATTENTION,
    SA_BULK_ID,
)
INT_SEARCH_ATTRIBUTES: Final = (SA_REFUND_AMOUNT,)


def cancellation_workflow_id(shop_id: str, order_id: str, n: int) -> str:
    """The workflow id of the order's ``n``-th cancellation; it is also the cancellation id."""
    return f"cancellation-{shop_id}-{order_id}-{n}"
