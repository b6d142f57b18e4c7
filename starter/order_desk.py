"""What the client does with a shop's orders and settings, beside its cancellations: store
an order (its card tenders checked at the provider, in the shop's own account), fulfillment,
settings, the refund quote and the provider's recapture check before an undo.
:class:`~starter.client.CancellationClient` builds on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from pydantic import BaseModel

from activities.database import StoreRepository
from activities.provider_client import (
    PaymentProviderClient,
    ProviderError,
    ProviderRefused,
    ProviderUnavailable,
)
from domain.cancellation import (
    CanceledItem,
    CancellationStatus,
    CancellationView,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import Order, OrderDocument, OrderStatus
from domain.payments import ProviderPayment, card_tenders_by_payment, payment_mismatch
from domain.refund_plan import RefundChannel, RefundMethod, RefundPlan, plan_refund
from domain.requests import (
    Quote,
    QuoteLine,
)
from domain.scope import refundable_amount, scope_of
from domain.shop import ShopSettings


class RecapturePreview(BaseModel):
    """The provider's word, before an undo, on one card refund it made: can it take the
    money again (``restorable``), must the customer pay again (``reauth_required``,
    ``not_possible``)? Read only; the undo asks again itself."""

    refund_id: str
    payment_id: str
    amount: int
    outcome: str
    until: datetime | None = None


class OrderDesk:
    """A shop's orders and settings, for backend services and merchants."""

    store: StoreRepository
    provider_accounts: dict[str, str]
    _provider: PaymentProviderClient | None

    get_cancellation: Callable[..., Awaitable[CancellationView]]
    """The latest cancellation of an order, or the one named (the client defines it)."""

    async def recapture_preview(
        self, shop_id: str, order_id: str | None = None, cancellation_id: str | None = None
    ) -> list[RecapturePreview]:
        """For each card refund the cancellation made, whether the provider could take the
        money again now (rule 11's check, shown before the merchant confirms an undo)."""
        view = await self.get_cancellation(shop_id, order_id, cancellation_id)
        previews = []
        for line in view.refunds:
            if line.status is not RefundStatus.SUCCEEDED or line.payment_id is None:
                continue
            if line.channel is not RefundChannel.PROVIDER:
                continue
            if self._provider is None:
                raise CancellationError(
                    ErrorCode.PROVIDER_UNAVAILABLE, "no payment provider is configured"
                )
            try:
                answer = await self._provider.recapture_check(
                    line.payment_id, account=self.provider_accounts.get(shop_id)
                )
            except ProviderError:
                raise CancellationError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    "the payment provider did not answer the recapture check; try again",
                ) from None
            previews.append(
                RecapturePreview(
                    refund_id=line.refund_id,
                    payment_id=line.payment_id,
                    amount=line.amount,
                    outcome=str(answer.get("outcome")),
                    until=answer.get("until"),
                )
            )
        return previews

    async def quote(
        self,
        shop_id: str,
        order_id: str,
        refund_method: RefundMethod = RefundMethod.ORIGINAL,
        items: list[CanceledItem] | None = None,
    ) -> Quote:
        """The refund plan an acceptance would produce now; changes nothing (rule 9)."""
        order = await self.store.get_order(shop_id, order_id)
        plan = await self._plan(order, refund_method, items)
        return Quote(
            refundable=plan.refundable,
            currency=plan.currency,
            lines=[
                QuoteLine(
                    tender_id=line.tender_id,
                    tender_kind=line.tender_kind,
                    method=line.method,
                    amount=line.amount,
                )
                for line in plan.lines
            ],
        )

    async def put_order(self, shop_id: str, order_id: str, doc: OrderDocument) -> bool:
        """Create or replace an order; ``True`` when new.

        Every card tender's payment is checked at the provider first, in the shop's own
        account: it must exist there, in the order's currency, with at least the tenders'
        amount authorized or captured (``payment_mismatch``). Nothing is stored otherwise.
        """
        await self._check_card_tenders(shop_id, order_id, doc)
        return await self.store.put_order(shop_id, order_id, doc)

    async def _check_card_tenders(self, shop_id: str, order_id: str, doc: OrderDocument) -> None:
        grouped = card_tenders_by_payment(doc.tenders)
        if not grouped:
            return
        try:
            stored = (await self.store.get_order(shop_id, order_id)).tenders
        except CancellationError:
            stored = []
        for payment_id, tenders in grouped.items():
            if all(t in stored for t in tenders):
                continue  # checked when it was stored; its refunds since are the order's own
            payment = await self._provider_payment(shop_id, payment_id)
            problem = payment_mismatch(tenders, doc.currency, payment)
            if problem is not None:
                raise CancellationError(ErrorCode.PAYMENT_MISMATCH, problem)

    async def _provider_payment(self, shop_id: str, payment_id: str) -> ProviderPayment | None:
        """The payment in the shop's provider account, or ``None`` when it has none."""
        if self._provider is None:
            raise CancellationError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "no payment provider is configured to check card tenders",
            )
        try:
            answer = await self._provider.get_payment(
                payment_id, account=self.provider_accounts.get(shop_id)
            )
        except ProviderRefused as err:
            if err.status == 404:
                return None
            raise CancellationError(
                ErrorCode.PAYMENT_MISMATCH, f"the provider refused payment {payment_id}"
            ) from None
        except ProviderUnavailable:
            raise CancellationError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the payment provider does not answer; the order was not stored, try again",
            ) from None
        except ProviderError:
            raise CancellationError(
                ErrorCode.PROVIDER_UNAVAILABLE, "the payment provider's answer was unreadable"
            ) from None
        try:
            return ProviderPayment.model_validate(answer)
        except ValueError:
            raise CancellationError(
                ErrorCode.PROVIDER_UNAVAILABLE, "the payment provider's answer was unreadable"
            ) from None

    async def get_order(self, shop_id: str, order_id: str) -> Order:
        """The order with its status, items and tenders."""
        return await self.store.get_order(shop_id, order_id)

    async def set_fulfillment(self, shop_id: str, order_id: str, status: OrderStatus) -> Order:
        """Report fulfillment progress."""
        return await self.store.set_fulfillment_status(shop_id, order_id, status)

    async def get_settings(self, shop_id: str) -> ShopSettings:
        """The shop's cancellation settings."""
        return await self.store.get_settings(shop_id)

    async def put_settings(self, shop_id: str, settings: ShopSettings) -> ShopSettings:
        """Replace the shop's cancellation settings."""
        await self.store.put_settings(shop_id, settings)
        return settings

    async def _refunded_by_tender(self, shop_id: str, order_id: str) -> dict[str, int]:
        refunded: dict[str, int] = {}
        for row in await self.store.cancellations_of_order(shop_id, order_id):
            if row.status is CancellationStatus.CANCELED:
                for line in row.view.refunds:
                    refunded[line.tender_id] = refunded.get(line.tender_id, 0) + line.amount
        return refunded

    async def _plan(
        self, order: Order, method: RefundMethod, items: list[CanceledItem] | None
    ) -> RefundPlan:
        """The refund plan of cancelling ``items`` (everything left when ``None``) now."""
        refunded = await self._refunded_by_tender(order.shop_id, order.order_id)
        scope = scope_of(order, items)
        return plan_refund(
            order,
            method,
            amount=refundable_amount(order, scope, refunded),
            refunded_by_tender=refunded,
        )
