"""The search attributes operators filter runs by, typed and kept in one place."""

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from domain.cancellation import Attention, CancellationView
from domain.contract import (
    SA_BULK_ID,
    SA_CANCELLATION_STATUS,
    SA_INITIATED_BY,
    SA_NEEDS_ATTENTION,
    SA_ORDER_ID,
    SA_REFUND_AMOUNT,
    SA_SHOP_ID,
)

SHOP_ID = SearchAttributeKey.for_keyword(SA_SHOP_ID)
ORDER_ID = SearchAttributeKey.for_keyword(SA_ORDER_ID)
CANCELLATION_STATUS = SearchAttributeKey.for_keyword(SA_CANCELLATION_STATUS)
INITIATED_BY = SearchAttributeKey.for_keyword(SA_INITIATED_BY)
NEEDS_ATTENTION = SearchAttributeKey.for_keyword(SA_NEEDS_ATTENTION)
REFUND_AMOUNT = SearchAttributeKey.for_int(SA_REFUND_AMOUNT)

ALL_KEYS: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    SHOP_ID,
    ORDER_ID,
    CANCELLATION_STATUS,
    INITIATED_BY,
    NEEDS_ATTENTION,
    REFUND_AMOUNT,
)


def _attention(view: CancellationView) -> str:
    return (view.needs_attention or Attention.NONE).value


def _refunded(view: CancellationView) -> int:
    return view.refunded.amount if view.refunded else 0


def start_search_attributes(view: CancellationView) -> TypedSearchAttributes:
    """The attributes a run starts with, so it is findable from its first second."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SHOP_ID, view.shop_id),
            SearchAttributePair(ORDER_ID, view.order_id),
            SearchAttributePair(CANCELLATION_STATUS, view.status.value),
            SearchAttributePair(INITIATED_BY, view.initiated_by.value),
            SearchAttributePair(NEEDS_ATTENTION, _attention(view)),
            SearchAttributePair(REFUND_AMOUNT, _refunded(view)),
        ]
    )


def search_attribute_updates(
    before: CancellationView, after: CancellationView
) -> list[SearchAttributeUpdate]:  # type: ignore[type-arg]
    """Only what changed, so each transition costs at most one history event."""
    updates: list[SearchAttributeUpdate] = []  # type: ignore[type-arg]
    if before.status != after.status:
        updates.append(CANCELLATION_STATUS.value_set(after.status.value))
    if _attention(before) != _attention(after):
        updates.append(NEEDS_ATTENTION.value_set(_attention(after)))
    if _refunded(before) != _refunded(after):
        updates.append(REFUND_AMOUNT.value_set(_refunded(after)))
    return updates


BULK_ID = SearchAttributeKey.for_keyword(SA_BULK_ID)


def bulk_search_attributes(shop_id: str, bulk_id: str) -> TypedSearchAttributes:
    """A bulk cancellation job's attributes: ``ShopId`` and ``BulkId``."""
    return TypedSearchAttributes(
        [SearchAttributePair(SHOP_ID, shop_id), SearchAttributePair(BULK_ID, bulk_id)]
    )
