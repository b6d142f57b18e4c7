"""Path parameters, validated like the domain's identifiers."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path

IDENTIFIER: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""The domain's ``Identifier`` pattern (``domain.order``)."""

BUILT_IDENTIFIER: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:~-]*$"
"""Ids the product builds from identifiers with the ``~`` separator (``domain.contract``)."""

ShopId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=IDENTIFIER, description="The shop.")
]
OrderId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=IDENTIFIER, description="The shop's order.")
]
CancellationId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=BUILT_IDENTIFIER,
        description="A cancellation (`cancellation~{shop_id}~{order_id}~{n}`; cancellations"
        " started before release 2 keep `cancellation-{shop_id}-{order_id}-{n}`).",
    ),
]
RefundId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=220,
        pattern=BUILT_IDENTIFIER,
        description="A refund line of the cancellation (`refund_id` in the view).",
    ),
]
Sku = Annotated[
    str, Path(min_length=1, max_length=64, pattern=IDENTIFIER, description="A stock item.")
]
CustomerId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=IDENTIFIER, description="A customer.")
]
