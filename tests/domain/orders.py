"""The order the domain's tests build: shop ``s``, order ``o``, customer ``c``, in KRW."""

from typing import Any

from domain.order import Order, OrderItem, Tender


def an_order(items: list[OrderItem], tenders: list[Tender], **fields: Any) -> Order:
    """``fields`` give the rest (status, shipping fee, canceled quantities) or other ids."""
    ids = {"shop_id": "s", "order_id": "o", "customer_id": "c", "currency": "KRW"}
    return Order(**(ids | fields), items=items, tenders=tenders)
