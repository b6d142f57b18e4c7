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


ID_SEPARATOR: Final = "~"
"""Separates the parts of every id this product builds from the caller's ids.

Shop, order, item, tender and SKU ids match ``[A-Za-z0-9][A-Za-z0-9_.:-]*``
(``domain.order.Identifier``), which never holds ``~``; ``~`` is also unreserved in URLs,
so an id built with it reads the same in the Web UI, in a path and in a log line."""

LEGACY_ID_PREFIX: Final = "cancellation-"
"""Cancellations started before release 2 are named ``cancellation-{shop}-{order}-{n}``.
That form is not injective (shop ``acc`` + order ``a-1`` spells shop ``acc-a`` + order
``1``); running cancellations keep those ids, new ones never get one."""


def cancellation_workflow_id(shop_id: str, order_id: str, n: int) -> str:
    """The workflow id of the order's ``n``-th cancellation; it is also the cancellation id.

    ``cancellation~{shop_id}~{order_id}~{n}``: injective, because neither id can hold the
    separator, so the parts split back exactly (see :func:`parse_cancellation_id`).
    """
    for part in (shop_id, order_id):
        if not part or ID_SEPARATOR in part:
            raise ValueError(f"an id can't be empty or hold {ID_SEPARATOR!r}: {part!r}")
    return ID_SEPARATOR.join(("cancellation", shop_id, order_id, str(n)))


def parse_cancellation_id(cancellation_id: str) -> tuple[str, str, int] | None:
    """``(shop_id, order_id, n)`` of an id :func:`cancellation_workflow_id` built, or ``None``
    (a legacy id, or not a cancellation id at all)."""
    parts = cancellation_id.split(ID_SEPARATOR)
    if len(parts) != 4 or parts[0] != "cancellation" or not parts[3].isdigit():
        return None
    if not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2], int(parts[3])
