"""The seed walked end to end: ``python -m starter demo [--json]`` against a running stack.

Every situation of the store-admin guide runs on a fresh order the demo creates itself, with real
card payments in the payment sandbox, through :class:`~starter.client.CancellationClient`. Each
scenario prints its steps, its outcome (cancellation status, order status, refunds) and its run's
link in the Temporal Web UI; a summary table ends the walk, and the exit status is 1 when any
scenario did not reach its expected outcome.

The settings come from the environment; variables that are unset are taken from the dev stack's
``.devstack/env``, so the demo runs from any shell once ``python -m starter dev`` is up.

This module also loads the demo data the dev stack starts with (:func:`seed_demo_data`): the
shops, stock, customers and orders of ``tools/demo_orders.json``, through ``load-orders``.

Rule numbers are those of ``docs/rules.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from activities.database import StoreRepository
from activities.provider_client import PaymentProviderClient, ProviderError
from domain.bank import BankAccount
from domain.cancellation import (
    OPEN_STATUSES,
    CanceledItem,
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    ReasonCode,
    RefundLine,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.money import format_money
from domain.order import OrderDocument, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundMethod
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    Quote,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    StartRequest,
    UndoRequest,
)
from domain.shop import ShopSettings
from starter import card_payments, orders_file
from starter.client import CancellationClient
from starter.config import ConfigError, Settings, environment_with_fallback
from tools.events_inbox import print_events_of
from tools.situations import CARD, Situation, TenderMix, situation, split

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = REPO_ROOT / ".devstack" / "env"
DEMO_ORDERS_FILE = Path(__file__).with_name("demo_orders.json")

DEMO_SHOP_ID = "demo-shop"
DEMO_SHOP_ACCOUNT = "acct_demo_shop"
"""demo-shop's account at the sandbox (the dev stack's ``PROVIDER_ACCOUNTS``)."""
"""The shop of the demo data and of the walk."""
PHONE_ONLY_SHOP_ID = "demo-shop-phone-only"
"""A shop that takes no requests from My Account: customers phone or write instead."""
CURRENCY = "KRW"
CUSTOMER_ID = "cust-ana"
"""The demo data's customer who places the walk's orders (those that don't watch balances)."""

CATALOG: Mapping[str, int] = {"sku-mug": 10000, "sku-tee": 7000, "sku-sample": 0}
"""The demo shop's SKUs (as in ``demo_orders.json``) and their unit prices in won."""
SHIPPING_FEE = 3000

# A scenario waits for workflows, activities and (for the pending refund) the sandbox's
# 2-second settlement plus the poll backoff; 30 s is ample on a healthy stack.
SCENARIO_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.2
DEFAULT_UI_URL = "http://127.0.0.1:8233"

_DEMO_BANK_ACCOUNT = BankAccount(bank="Shinhan", account_number="110-123-456789", holder="Kim")


# -- orders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderPlan:
    """An order to place: items, status and how it was paid.

    ``tenders`` is the catalog's tender mix (:mod:`tools.situations`), split over the total;
    ``()`` pays nothing, which suits orders awaiting payment. Card tenders get a real sandbox
    payment, captured unless ``capture`` is false, with the sandbox ``behavior`` given.
    """

    order_id: str
    customer_id: str
    items: tuple[tuple[str, int], ...]
    status: OrderStatus = OrderStatus.PAID
    shipping_fee: int = SHIPPING_FEE
    tenders: TenderMix = CARD
    capture: bool = True
    behavior: Mapping[str, Any] | None = None

    @property
    def total(self) -> int:
        """Items plus shipping, in minor units."""
        return sum(CATALOG[sku] * quantity for sku, quantity in self.items) + self.shipping_fee


async def paid_tenders(
    provider: PaymentProviderClient,
    mix: TenderMix,
    total: int,
    *,
    idempotency_key: Callable[[int], str],
    capture: bool = True,
    behavior: dict[str, Any] | None = None,
    account: str | None = None,
) -> list[Tender]:
    """An order's tenders for ``total`` paid as ``mix`` is, numbered from 1; each card tender
    gets a real sandbox payment, keyed ``idempotency_key(n)``."""
    tenders = []
    for n, (kind_name, amount) in enumerate(split(mix, total), start=1):
        kind = TenderKind(kind_name)
        payment_id = None
        if kind is TenderKind.CARD:
            payment = await card_payments.create_payment(
                provider,
                amount,
                CURRENCY,
                capture=capture,
                behavior=behavior,
                idempotency_key=idempotency_key(n),
                account=account,
            )
            payment_id = str(payment["id"])
        tenders.append(Tender(tender_id=f"t{n}", kind=kind, amount=amount, payment_id=payment_id))
    return tenders


async def place_order(
    store: StoreRepository,
    provider: PaymentProviderClient,
    shop_id: str,
    plan: OrderPlan,
    *,
    account: str | None = None,
) -> OrderDocument:
    """Create the order's card payment in the sandbox, then the order in the store.

    The payment's idempotency key is derived from the order id, so placing the same order again
    (a restart half-way, say) finds the first payment instead of charging twice.
    """
    tenders = await paid_tenders(
        provider,
        plan.tenders,
        plan.total,
        idempotency_key=lambda n: f"demo-order:{shop_id}:{plan.order_id}:{n}",
        capture=plan.capture,
        behavior=dict(plan.behavior) if plan.behavior else None,
        account=account,
    )
    document = OrderDocument(
        customer_id=plan.customer_id,
        currency=CURRENCY,
        status=plan.status,
        shipping_fee=plan.shipping_fee,
        items=[
            OrderItem(item_id=f"i{n}", sku=sku, quantity=quantity, unit_price=CATALOG[sku])
            for n, (sku, quantity) in enumerate(plan.items, start=1)
        ],
        tenders=tenders,
    )
    await store.put_order(shop_id, plan.order_id, document)
    return document


# -- demo data for the dev stack -------------------------------------------------------------


async def seed_demo_data(client: CancellationClient, settings: Settings) -> list[str]:
    """Load what is missing of ``demo_orders.json``; return what was added.

    ``load-orders`` creates or replaces; the dev stack loads only what the store lacks, so a
    restart neither resets stock and balances that cancellations changed since, nor trips over
    orders that have cancellations. The sandbox payments keep their idempotency keys, so an
    order whose store write was interrupted finds its payment again instead of paying twice.

    Raises:
        CancellationError: The file is invalid, or the store or the sandbox refused.
    """
    the_file, payments = orders_file.read_orders_file(DEMO_ORDERS_FILE)
    missing: dict[str, orders_file.ShopData] = {}
    added: list[str] = []
    for shop_id, shop in the_file.shops.items():
        orders = {
            order_id: document
            for order_id, document in shop.orders.items()
            if await _missing_order(client.store, shop_id, order_id)
        }
        stock = {
            sku: available
            for sku, available in shop.stock.items()
            if await client.store.get_stock(shop_id, sku) is None
        }
        customers = {
            customer_id: balances
            for customer_id, balances in shop.customers.items()
            if await client.store.get_balances(shop_id, customer_id) is None
        }
        # The settings only on the first load (no order of the shop there yet): settings
        # changed since, through the hook or the CLI, stay as they are.
        first_load = len(orders) == len(shop.orders)
        settings_now = shop.settings if first_load else None
        missing[shop_id] = orders_file.ShopData(
            settings=settings_now, stock=stock, customers=customers, orders=orders
        )
        added += [f"{shop_id} settings"] if settings_now else []
        added += [f"stock {sku}" for sku in stock]
        added += [f"customer {customer_id}" for customer_id in customers]
        added += [f"order {order_id}" for order_id in orders]
    if added:
        wanted = {ref: spec for ref, spec in payments.items() if ref[1] in missing[ref[0]].orders}
        await orders_file.load_orders(
            client, settings, orders_file.OrdersFile(shops=missing), wanted, source=DEMO_ORDERS_FILE
        )
    return added


async def _missing_order(store: StoreRepository, shop_id: str, order_id: str) -> bool:
    try:
        await store.get_order(shop_id, order_id)
    except CancellationError as error:
        if error.code is ErrorCode.ORDER_NOT_FOUND:
            return True
        raise
    return False


# -- reporting -------------------------------------------------------------------------------


class ScenarioFailedError(Exception):
    """A scenario went somewhere it should not have; the message says where."""


@dataclass
class Report:
    """What one scenario did and how it ended."""

    key: str
    name: str
    title: str
    expected: str
    steps: list[str] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    got: str = "not reached"
    ok: bool = False
    view: CancellationView | None = None
    order_status: str | None = None
    ui_url: str | None = None
    seconds: float = 0.0
    situation: Situation | None = None
    """The catalog's situation: how the walk's orders are paid."""

    def step(self, text: str) -> None:
        """Record one step in the order it happened."""
        self.steps.append(text)

    def check(self, passed: bool, text: str) -> bool:
        """Record a fact of the outcome, marked when it does not hold; returns ``passed``."""
        self.outcome.append(_marked(passed, text))
        return passed

    def observe(self, passed: bool, text: str) -> bool:
        """Record what was seen half-way as a step, marked when unexpected; returns ``passed``."""
        self.steps.append(_marked(passed, text))
        return passed

    def as_json(self) -> dict[str, Any]:
        """The machine-readable line of the summary."""
        return {
            "name": self.name,
            "ok": self.ok,
            "expected": self.expected,
            "got": self.got,
            "cancellation_id": self.view.cancellation_id if self.view else None,
            "status": self.view.status.value if self.view else None,
            "order_status": self.order_status,
            "ui_url": self.ui_url,
        }


# -- the walk --------------------------------------------------------------------------------


class DemoWalk:
    """Walks the scenarios against a running stack, one fresh order each."""

    def __init__(
        self,
        client: CancellationClient,
        provider: PaymentProviderClient,
        *,
        ui_url: str,
        namespace: str,
    ) -> None:
        self.client = client
        self.store = client.store
        self.provider = provider
        self._ui_url = ui_url.rstrip("/")
        self._namespace = namespace

    # ------------------------------------------------------------------ helpers

    def account(self, shop_id: str) -> str | None:
        """The shop's account at the provider (``PROVIDER_ACCOUNTS``)."""
        return self.client.provider_accounts.get(shop_id)

    def link(self, view: CancellationView) -> str:
        """The run's page in the Temporal Web UI."""
        return f"{self._ui_url}/namespaces/{self._namespace}/workflows/{view.workflow_id}"

    async def place(
        self,
        report: Report,
        slug: str,
        items: tuple[tuple[str, int], ...],
        *,
        shop_id: str = DEMO_SHOP_ID,
        customer_id: str = CUSTOMER_ID,
        **plan: Any,
    ) -> str:
        """Place a fresh order ``demo-<slug>-<random>`` and describe it as the first step.

        The order is paid as the report's situation says (tenders, capture, card behavior);
        ``behavior`` adds to the situation's card behavior."""
        order_id = f"demo-{slug}-{secrets.token_hex(3)}"
        paid_as = report.situation
        if paid_as is not None:
            plan.setdefault("tenders", paid_as.tenders)
            plan.setdefault("capture", paid_as.capture)
            plan["behavior"] = {**paid_as.card_behavior, **(plan.get("behavior") or {})} or None
        document = await place_order(
            self.store,
            self.provider,
            shop_id,
            OrderPlan(order_id, customer_id, items, **plan),
            account=self.client.provider_accounts.get(shop_id),
        )
        lines = ", ".join(f"{quantity} × {sku}" for sku, quantity in items)
        paid = "; ".join(_tender_text(tender) for tender in document.tenders) or "nothing paid"
        report.step(
            f"Order {order_id} ({document.status.value}) in {shop_id}: {lines}, "
            f"shipping {_money(document.shipping_fee)}; {paid}"
        )
        return order_id

    async def request(self, report: Report, order_id: str, *, shop_id: str = DEMO_SHOP_ID) -> None:
        """The customer asks from My Account."""
        view, _ = await self.client.start_cancellation(
            shop_id,
            order_id,
            StartRequest(
                initiated_by=InitiatedBy.CUSTOMER,
                channel=Channel.MY_ACCOUNT,
                reason_code=ReasonCode.CHANGED_MIND,
                reason="Ordered by mistake",
            ),
        )
        report.step(
            f"Customer requests the cancellation from My Account → {view.status.value}; "
            f"order {_status(view.order_status)} (Cancellation requested [Customer])"
        )

    async def accept(
        self, report: Report, order_id: str, reason_code: ReasonCode, **accept: Any
    ) -> CancellationView:
        """The merchant accepts the customer's request."""
        body = AcceptRequest(reason_code=reason_code, reason=_reason(reason_code), **accept)
        view = await self.client.accept(DEMO_SHOP_ID, order_id, body)
        report.step(f"Merchant accepts: {_acceptance_text(body)} → {view.status.value}")
        return view

    async def merchant_cancels(
        self,
        report: Report,
        order_id: str,
        reason_code: ReasonCode,
        *,
        shop_id: str = DEMO_SHOP_ID,
        channel: Channel = Channel.ADMIN,
        items: list[CanceledItem] | None = None,
        **accept: Any,
    ) -> CancellationView:
        """The merchant cancels: the start carries the acceptance (rule 5); ``items`` cancels
        only those quantities (rule 10), ``None`` all that remains of the order."""
        body = AcceptRequest(reason_code=reason_code, reason=_reason(reason_code), **accept)
        view, _ = await self.client.start_cancellation(
            shop_id,
            order_id,
            StartRequest(
                initiated_by=InitiatedBy.MERCHANT,
                channel=channel,
                reason_code=reason_code,
                reason=body.reason,
                items=items,
                accept=body,
            ),
        )
        scope = f"items {_items_text(items)}" if items else "all that remains"
        report.step(
            f"Merchant cancels {scope} (initiated_by merchant, channel {channel.value}): "
            f"{_acceptance_text(body)} → {view.status.value}"
        )
        return view

    async def until(
        self,
        order_id: str,
        done: Callable[[CancellationView], bool],
        *,
        shop_id: str = DEMO_SHOP_ID,
    ) -> CancellationView:
        """Poll the cancellation until ``done`` holds, or it needs a person, or it ended."""
        while True:
            view = await self.client.get_cancellation(shop_id, order_id)
            if done(view):
                return view
            if view.needs_attention is not None or view.status not in OPEN_STATUSES:
                attention = view.needs_attention
                needs = f", needs attention: {attention.value}" if attention else ""
                raise ScenarioFailedError(f"stopped at {view.status.value}{needs}")
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

    async def until_status(
        self, order_id: str, status: CancellationStatus, *, shop_id: str = DEMO_SHOP_ID
    ) -> CancellationView:
        """Poll until the cancellation reaches ``status``."""
        return await self.until(order_id, lambda v: v.status is status, shop_id=shop_id)

    def conclude(
        self,
        report: Report,
        view: CancellationView,
        expected: CancellationStatus,
        *,
        got: str | None = None,
        facts_hold: bool = True,
    ) -> None:
        """Record the final view and whether the scenario reached what it expected."""
        report.view = view
        report.ui_url = self.link(view)
        report.order_status = _status(view.order_status)
        report.got = got or view.status.value
        refunded = view.refunded.amount if view.refunded else 0
        refundable = view.refundable.amount if view.refundable else 0
        report.outcome.insert(
            0,
            f"cancellation {view.status.value}, order {report.order_status}, "
            f"refunded {_money(refunded)} of {_money(refundable)}",
        )
        for position, line in enumerate(view.refunds, start=1):
            report.outcome.insert(position, _refund_text(line))
        report.ok = view.status is expected and facts_hold

    def conclude_refunded(self, report: Report, view: CancellationView, *facts: bool) -> None:
        """Conclude a scenario that ends canceled with every refund line succeeded and adding
        up to what was refundable (rule 8), and with its ``facts`` holding."""
        self.conclude(
            report, view, CancellationStatus.CANCELED, facts_hold=all(facts) and _all_ok(view)
        )

    # ------------------------------------------------------------------ scenarios

    async def request_accepted(self, report: Report) -> None:
        """a. The customer requests from My Account; the merchant accepts (card, captured)."""
        order_id = await self.place(report, "accepted", (("sku-mug", 2),))
        before = await self._stock("sku-mug")
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        after = await self._stock("sku-mug")
        restocked = report.check(
            after - before == 2, f"stock sku-mug {before} → {after} (2 restocked)"
        )
        self.conclude_refunded(report, view, restocked)

    async def phoned_instead(self, report: Report) -> None:
        """b. Requests are off in the shop; the customer phones; the merchant enters it."""
        shop = PHONE_ONLY_SHOP_ID
        # The walk owns this shop's settings: it exists to show requests being turned off.
        await self.store.put_settings(shop, ShopSettings(customer_cancellation_requests=False))
        report.step(f"Shop {shop}: customer_cancellation_requests is off")
        order_id = await self.place(report, "phoned", (("sku-tee", 1),), shop_id=shop)
        refused = await self._refused(
            report,
            ErrorCode.CUSTOMER_REQUESTS_DISABLED,
            self.request(report, order_id, shop_id=shop),
            "Customer requests from My Account",
        )
        report.step("The customer phones the store instead")
        await self.merchant_cancels(
            report, order_id, ReasonCode.CUSTOMER_CONTACT, shop_id=shop, channel=Channel.CONTACT
        )
        view = await self.until_status(order_id, CancellationStatus.CANCELED, shop_id=shop)
        self.conclude(
            report,
            view,
            CancellationStatus.CANCELED,
            got=f"{refused.value if refused else 'not refused'} → {view.status.value}",
            facts_hold=refused is ErrorCode.CUSTOMER_REQUESTS_DISABLED and _all_ok(view),
        )

    async def shipped_refused(self, report: Report) -> None:
        """c. The order is in transit already: a return, not a cancellation."""
        order_id = await self.place(report, "shipped", (("sku-tee", 1),))
        await self.client.set_fulfillment(DEMO_SHOP_ID, order_id, OrderStatus.IN_TRANSIT)
        report.step("The warehouse reports the order in_transit")
        refused = await self._refused(
            report, ErrorCode.ORDER_SHIPPED, self.request(report, order_id), "Customer requests"
        )
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        none_started = not await self.client.cancellations_of_order(DEMO_SHOP_ID, order_id)
        unchanged = report.check(
            order.status is OrderStatus.IN_TRANSIT and none_started,
            f"order still {order.status.value}; no cancellation was started "
            "(process it as a return)",
        )
        report.order_status = order.status.value
        report.got = f"refused {refused.value}" if refused else "not refused"
        report.ok = refused is ErrorCode.ORDER_SHIPPED and unchanged

    async def sold_out(self, report: Report) -> None:
        """d. The merchant cancels because the item is sold out."""
        order_id = await self.place(report, "sold-out", (("sku-tee", 1),))
        # Sold out: there is nothing to put back on the shelf.
        await self.merchant_cancels(report, order_id, ReasonCode.SOLD_OUT, restock=False)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        self.conclude_refunded(report, view)

    async def undeliverable(self, report: Report) -> None:
        """d. The merchant cancels because the address is outside the shipping area."""
        order_id = await self.place(report, "undeliverable", (("sku-mug", 1),))
        await self.merchant_cancels(report, order_id, ReasonCode.UNDELIVERABLE_AREA)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        self.conclude_refunded(report, view)

    async def defective(self, report: Report) -> None:
        """e. The item is defective: canceled without putting it back into stock."""
        order_id = await self.place(report, "defective", (("sku-tee", 1),))
        before = await self._stock("sku-tee")
        await self.merchant_cancels(report, order_id, ReasonCode.DEFECTIVE, restock=False)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        after = await self._stock("sku-tee")
        kept = report.check(after == before, f"stock sku-tee {before} → {after} (not restocked)")
        self.conclude_refunded(report, view, kept)

    async def rejected(self, report: Report) -> None:
        """f. The merchant rejects the customer's request; the order carries on."""
        order_id = await self.place(
            report, "rejected", (("sku-tee", 1),), status=OrderStatus.PREPARING
        )
        await self.request(report, order_id)
        view = await self.client.reject(
            DEMO_SHOP_ID,
            order_id,
            RejectRequest(
                reason="Made to order; production has started",
                customer_note="Your order is already being made, so it can't be canceled.",
            ),
        )
        report.step(f"Merchant rejects: production has started → {view.status.value}")
        restored = _order_back(report, view, OrderStatus.PREPARING)
        self.conclude(report, view, CancellationStatus.REJECTED, facts_hold=restored)

    async def withdrawn(self, report: Report) -> None:
        """f. The customer takes the request back before the merchant decides."""
        order_id = await self.place(report, "withdrawn", (("sku-mug", 1),))
        await self.request(report, order_id)
        view = await self.client.withdraw(DEMO_SHOP_ID, order_id)
        report.step(f"Customer withdraws the request → {view.status.value}")
        restored = _order_back(report, view)
        self.conclude(report, view, CancellationStatus.WITHDRAWN, facts_hold=restored)

    async def voided(self, report: Report) -> None:
        """g. The card was only authorized: the cancellation voids it instead of refunding."""
        order_id = await self.place(report, "voided", (("sku-tee", 1),))
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        payment = await self.provider.get_payment(
            str(view.refunds[0].payment_id), account=self.account(view.shop_id)
        )
        is_void = report.check(
            payment["status"] == "voided", f"sandbox payment {payment['id']}: {payment['status']}"
        )
        self.conclude_refunded(report, view, is_void)

    async def bank_deposit(self, report: Report) -> None:
        """h. Paid by bank transfer: the merchant deposits the refund and confirms it."""
        order_id = await self.place(report, "bank-deposit", (("sku-tee", 1),))
        await self.request(report, order_id)
        view = await self.accept(
            report, order_id, ReasonCode.CHANGED_MIND, bank_account=_DEMO_BANK_ACCOUNT
        )
        line = view.refunds[0]
        waiting = report.observe(
            line.status is RefundStatus.AWAITING_CONFIRMATION,
            f"while the deposit is outstanding: {view.status.value}, "
            f"order {_status(view.order_status)}, refund {line.status.value}",
        )
        reference = f"TRF-{secrets.token_hex(3).upper()}"
        await self.client.confirm_refund(
            DEMO_SHOP_ID, order_id, line.refund_id, ConfirmRefundRequest(reference=reference)
        )
        report.step(f"Merchant transfers the money and confirms it with reference {reference}")
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        self.conclude_refunded(report, view, waiting)

    async def points_and_credits(self, report: Report) -> None:
        """i. Paid wholly in points and credits: canceled at once, balances given back."""
        customer = await self._new_customer(200, 100, report)
        order_id = await self.place(
            report,
            "points-credits",
            (("sku-tee", 1),),
            customer_id=customer,
        )
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        returned = await self._balances_back(report, customer, order_id, (200, 100))
        self.conclude_refunded(report, view, returned)

    async def zero_amount(self, report: Report) -> None:
        """i. A $0 order: nothing to refund, canceled at once."""
        order_id = await self.place(report, "zero", (("sku-sample", 3),), shipping_fee=0)
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        self.conclude(report, view, CancellationStatus.CANCELED, facts_hold=not view.refunds)

    async def unpaid(self, report: Report) -> None:
        """i. An order not paid yet: nothing to refund, canceled at once."""
        order_id = await self.place(
            report, "unpaid", (("sku-mug", 1),), status=OrderStatus.AWAITING_PAYMENT
        )
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        self.conclude(report, view, CancellationStatus.CANCELED, facts_hold=not view.refunds)

    async def declined_then_credits(self, report: Report) -> None:
        """j. The card refund is declined; the merchant pays it back in store credit instead."""
        customer = await self._new_customer(0, 0)
        order_id = await self.place(
            report,
            "declined",
            (("sku-mug", 1),),
            customer_id=customer,
        )
        report.step("(the sandbox will decline this card's refunds)")
        await self.merchant_cancels(report, order_id, ReasonCode.SHIPPING_DELAY)
        view = await self.until(
            order_id, lambda v: any(r.status is RefundStatus.FAILED for r in v.refunds)
        )
        line = next(r for r in view.refunds if r.status is RefundStatus.FAILED)
        flagged = report.observe(
            view.needs_attention is not None and view.needs_attention.value == "refund_failed",
            f"after the decline: {view.status.value}, refund {line.status.value} "
            f"({line.failure}), needs attention: "
            f"{view.needs_attention.value if view.needs_attention else 'no'}",
        )
        await self.client.retry_refund(
            DEMO_SHOP_ID, order_id, line.refund_id, RetryRefundRequest(method=RefundMethod.CREDITS)
        )
        report.step(f"Merchant retries refund {line.refund_id} as store credit")
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        balances = await self.store.get_balances(DEMO_SHOP_ID, customer)
        credited = report.check(
            balances is not None and balances[1] == line.amount,
            f"customer credits now {_money(balances[1] if balances else 0)}",
        )
        self.conclude_refunded(report, view, flagged, credited)

    async def pending_refund(self, report: Report) -> None:
        """k. The provider takes a while: the refund is processing, then settles."""
        order_id = await self.place(
            report,
            "pending",
            (("sku-tee", 1),),
            behavior={"settle_after_seconds": 2},
        )
        report.step("(the sandbox settles this card's refunds 2 s after they are asked for)")
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until(
            order_id,
            lambda v: (
                any(r.status is RefundStatus.PROCESSING for r in v.refunds)
                or v.status is CancellationStatus.CANCELED
            ),
        )
        seen = report.observe(
            view.status is CancellationStatus.IN_PROGRESS,
            f"while the provider works: {view.status.value}, "
            f"refund {view.refunds[0].status.value if view.refunds else '?'}",
        )
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        reference = view.refunds[0].provider_reference if view.refunds else None
        refund = await self.provider.get_refund(str(reference), account=self.account(DEMO_SHOP_ID))
        settled = report.check(
            refund["status"] == "succeeded", f"sandbox refund {refund['id']}: {refund['status']}"
        )
        self.conclude_refunded(report, view, seen, settled)

    async def quote_first(self, report: Report) -> None:
        """l. The merchant asks for a refund quote before accepting; nothing changes."""
        order_id = await self.place(
            report,
            "quote",
            (("sku-mug", 1), ("sku-tee", 1)),
        )
        await self.request(report, order_id)
        quote = await self.client.quote(DEMO_SHOP_ID, order_id, RefundMethod.ORIGINAL)
        report.step(f"Quote (refund to the original payment): {_quote_text(quote)}")
        as_credit = await self.client.quote(DEMO_SHOP_ID, order_id, RefundMethod.CREDITS)
        report.step(f"Quote (store credit instead): {_quote_text(as_credit)}")
        still = await self.client.get_cancellation(DEMO_SHOP_ID, order_id)
        unchanged = report.observe(
            still.status is CancellationStatus.REQUESTED and not still.refunds,
            f"after quoting: still {still.status.value}, nothing refunded",
        )
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        view = await self.until_status(order_id, CancellationStatus.CANCELED)
        planned = sorted((line.tender_id, line.amount) for line in quote.lines)
        done = sorted((line.tender_id, line.amount) for line in view.refunds)
        matches = report.check(planned == done, "the refunds are exactly the quoted lines")
        self.conclude_refunded(report, view, unchanged, matches)

    async def _new_customer(self, points: int, credits: int, report: Report | None = None) -> str:
        """A new customer of the demo shop with these balances, told in ``report`` if given."""
        customer = f"demo-cust-{secrets.token_hex(3)}"
        await self.store.put_balances(DEMO_SHOP_ID, customer, points, credits)
        if report is not None:
            report.step(f"Customer {customer} has {points} points and {credits} credits left")
        return customer

    async def _canceled_then_regretted(self, report: Report, order_id: str) -> None:
        """Request, accept (changed mind) and wait for the refund; then the customer regrets."""
        await self.request(report, order_id)
        await self.accept(report, order_id, ReasonCode.CHANGED_MIND)
        await self.until_status(order_id, CancellationStatus.CANCELED)
        report.step("Canceled and refunded; the customer changes their mind again")

    async def undo_recaptured(self, report: Report) -> None:
        """m. The customer wants the canceled order after all: the card payment is recaptured."""
        order_id = await self.place(report, "undo", (("sku-mug", 1),))
        payment_id = await self._payment_of(order_id)
        before = await self._stock("sku-mug")
        await self._canceled_then_regretted(report, order_id)
        await self._undo(report, order_id)
        view = await self.until_status(order_id, CancellationStatus.UNDONE)
        moves = await self._ledger(payment_id)
        recaptured = report.check(
            moves[-1:] == ["recapture"], f"sandbox payment {payment_id}: {' → '.join(moves)}"
        )
        after = await self._stock("sku-mug")
        reserved = report.check(
            after == before,
            f"stock sku-mug {before} → {after} (restocked by the cancellation, reserved again)",
        )
        restored = _order_back(report, view)
        self.conclude(
            report,
            view,
            CancellationStatus.UNDONE,
            facts_hold=recaptured and reserved and restored,
        )

    async def undo_in_progress(self, report: Report) -> None:
        """m. Undo while the refund waits for the bank deposit: the refund is called off."""
        order_id = await self.place(report, "undo-progress", (("sku-tee", 1),))
        await self.request(report, order_id)
        await self.accept(
            report, order_id, ReasonCode.CHANGED_MIND, bank_account=_DEMO_BANK_ACCOUNT
        )
        report.step("Before the merchant transfers anything, the customer wants the order back")
        await self._undo(report, order_id)
        view = await self.until_status(order_id, CancellationStatus.UNDONE)
        called_off = report.check(
            [line.status for line in view.refunds] == [RefundStatus.CANCELED],
            "the bank deposit that was never made is canceled; nothing to pay again",
        )
        restored = _order_back(report, view)
        self.conclude(report, view, CancellationStatus.UNDONE, facts_hold=called_off and restored)

    async def undo_needs_repayment(self, report: Report) -> None:
        """m. The provider can't recapture: the undo is refused, or the customer pays again."""
        order_id = await self.place(report, "undo-repay", (("sku-mug", 1),))
        report.step("(the sandbox can't recapture this card's payment once refunded)")
        await self._canceled_then_regretted(report, order_id)
        refused = await self._refused(
            report,
            ErrorCode.RECAPTURE_UNAVAILABLE,
            self._undo(report, order_id),
            "Merchant undoes the cancellation",
        )
        still = await self.client.get_cancellation(DEMO_SHOP_ID, order_id)
        unchanged = report.observe(
            still.status is CancellationStatus.CANCELED,
            f"nothing changed: still {still.status.value}, order {_status(still.order_status)}",
        )
        view = await self._undo(report, order_id, require_repayment=True)
        paid_again = await self._repay(report, order_id, view)
        view = await self.until_status(order_id, CancellationStatus.UNDONE)
        restored = _order_back(report, view)
        self.conclude(
            report,
            view,
            CancellationStatus.UNDONE,
            got=f"{refused.value if refused else 'not refused'} → {view.status.value}",
            facts_hold=refused is ErrorCode.RECAPTURE_UNAVAILABLE
            and unchanged
            and paid_again
            and restored,
        )

    async def undo_after_bank_deposit(self, report: Report) -> None:
        """n. Refunded by bank deposit, then undone: the customer must pay for the order again."""
        order_id = await self.place(report, "undo-deposit", (("sku-tee", 1),))
        await self.request(report, order_id)
        view = await self.accept(
            report, order_id, ReasonCode.CHANGED_MIND, bank_account=_DEMO_BANK_ACCOUNT
        )
        reference = f"TRF-{secrets.token_hex(3).upper()}"
        await self.client.confirm_refund(
            DEMO_SHOP_ID,
            order_id,
            view.refunds[0].refund_id,
            ConfirmRefundRequest(reference=reference),
        )
        report.step(f"Merchant deposits the refund and confirms it ({reference})")
        await self.until_status(order_id, CancellationStatus.CANCELED)
        report.step("Canceled; the customer changes their mind again")
        view = await self._undo(report, order_id)
        paid_again = await self._repay(report, order_id, view)
        view = await self.until_status(order_id, CancellationStatus.UNDONE)
        restored = _order_back(report, view)
        self.conclude(report, view, CancellationStatus.UNDONE, facts_hold=paid_again and restored)

    async def partial_in_three_steps(self, report: Report) -> None:
        """o. Card + points + credits, canceled in three steps: each step refunds its items'
        share over the tenders, the shipping fee goes with the last, and only the last step
        cancels the order."""
        customer = await self._new_customer(0, 0, report)
        order_id = await self.place(
            report,
            "partial",
            (("sku-mug", 2), ("sku-tee", 1)),
            customer_id=customer,
        )
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        paid = {tender.tender_id: tender.amount for tender in order.tenders}
        kinds = {tender.tender_id: tender.kind.value for tender in order.tenders}
        card_payment = await self._payment_of(order_id)
        card_tender = next(t.tender_id for t in order.tenders if t.kind is TenderKind.CARD)
        stock_before = {sku: await self._stock(sku) for sku in ("sku-mug", "sku-tee")}
        mug, tee = (CanceledItem(item_id=item.item_id, quantity=1) for item in order.items)
        steps: tuple[tuple[list[CanceledItem] | None, ReasonCode, Channel, int, str], ...] = (
            ([mug], ReasonCode.SOLD_OUT, Channel.ADMIN, CATALOG["sku-mug"], "paid"),
            ([tee], ReasonCode.SHIPPING_DELAY, Channel.ADMIN, CATALOG["sku-tee"], "paid"),
            # The last mug, and with it the shipping fee; now the order is canceled.
            (None, ReasonCode.CUSTOMER_CONTACT, Channel.CONTACT,
             CATALOG["sku-mug"] + SHIPPING_FEE, "canceled"),
        )  # fmt: skip
        refunded: dict[str, int] = {}
        order_statuses: list[str] = []
        every_step = True
        view: CancellationView | None = None
        for n, (items, reason_code, channel, amount, order_status) in enumerate(steps, start=1):
            started = await self.merchant_cancels(
                report, order_id, reason_code, channel=channel, items=items
            )
            view = await self._until_canceled(order_id, started.cancellation_id)
            order = await self.client.get_order(DEMO_SHOP_ID, order_id)
            order_statuses.append(order.status.value)
            for line in view.refunds:
                refunded[line.tender_id] = refunded.get(line.tender_id, 0) + line.amount
            refundable = view.refundable.amount if view.refundable else 0
            shipping = " (with the shipping fee)" if items is None else " (no shipping fee)"
            every_step &= report.observe(
                refundable == amount and _all_ok(view) and order.status.value == order_status,
                f"Step {n} canceled: {_money(refundable)} refunded{shipping} — "
                f"{_per_tender_text(view)}; order {order.status.value}, canceled so far "
                f"{_quantities_text(order.canceled_quantities)}",
            )
        assert view is not None
        whole = report.check(
            refunded == paid,
            "over the three steps every tender got back exactly what it paid: "
            + ", ".join(f"{kinds[t]} {_money(amount)}" for t, amount in refunded.items()),
        )
        returned = await self._balances_back(report, customer, order_id, (0, 0))
        card_refunds = [
            int(entry["amount"])
            for entry in (
                await self.provider.get_payment(card_payment, account=self.account(DEMO_SHOP_ID))
            )["ledger"]
            if entry["type"] == "refund"
        ]
        card = report.check(
            len(card_refunds) == len(steps) and sum(card_refunds) == paid[card_tender],
            f"sandbox payment {card_payment}: refunds "
            + " + ".join(_money(amount) for amount in card_refunds),
        )
        stock_after = {sku: await self._stock(sku) for sku in stock_before}
        restocked = report.check(
            stock_after["sku-mug"] - stock_before["sku-mug"] == 2
            and stock_after["sku-tee"] - stock_before["sku-tee"] == 1,
            "stock "
            + ", ".join(f"{sku} {stock_before[sku]} → {stock_after[sku]}" for sku in stock_before)
            + " (2 mugs and the tee restocked)",
        )
        self.conclude(
            report,
            view,
            CancellationStatus.CANCELED,
            got=" → ".join(order_statuses),
            facts_hold=every_step and whole and returned and card and restocked,
        )

    async def partial_undone(self, report: Report) -> None:
        """p. Undo of a partial cancellation restores exactly its items: the order stays
        paid, the canceled quantities are back, the card refund is recaptured."""
        order_id = await self.place(report, "partial-undo", (("sku-mug", 2), ("sku-tee", 1)))
        payment_id = await self._payment_of(order_id)
        before = await self._stock("sku-mug")
        mug = CanceledItem(item_id="i1", quantity=1)
        started = await self.merchant_cancels(report, order_id, ReasonCode.SOLD_OUT, items=[mug])
        view = await self._until_canceled(order_id, started.cancellation_id)
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        during = await self._stock("sku-mug")
        partial = report.observe(
            order.status is OrderStatus.PAID
            and order.canceled_quantities == {"i1": 1}
            and during - before == 1
            and _all_ok(view),
            f"canceled: {_per_tender_text(view)}; order {order.status.value}, canceled so far "
            f"{_quantities_text(order.canceled_quantities)}; stock sku-mug {before} → {during}",
        )
        report.step("The mug turns up after all; the customer still wants it")
        await self._undo(report, order_id)
        view = await self.until_status(order_id, CancellationStatus.UNDONE)
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        restored = report.check(
            order.status is OrderStatus.PAID and not order.canceled_quantities,
            f"order {order.status.value}, canceled quantities back: "
            f"{_quantities_text(order.canceled_quantities)}",
        )
        after = await self._stock("sku-mug")
        reserved = report.check(
            after == before, f"stock sku-mug {before} → {during} → {after} (the one mug reserved)"
        )
        payment = await self.provider.get_payment(payment_id, account=self.account(DEMO_SHOP_ID))
        moves = [f"{entry['type']} {_money(int(entry['amount']))}" for entry in payment["ledger"]]
        recaptured = report.check(
            [entry["type"] for entry in payment["ledger"]][-2:] == ["refund", "recapture"]
            and int(payment["ledger"][-1]["amount"]) == CATALOG["sku-mug"],
            f"sandbox payment {payment_id}: {' → '.join(moves)}",
        )
        quote = await self.client.quote(DEMO_SHOP_ID, order_id, RefundMethod.ORIGINAL)
        whole = report.check(
            quote.refundable == order.total,
            f"the whole order is cancelable again: quote {_quote_text(quote)}",
        )
        self.conclude(
            report,
            view,
            CancellationStatus.UNDONE,
            facts_hold=partial and restored and reserved and recaptured and whole,
        )

    # ------------------------------------------------------------------ plumbing

    async def _until_canceled(self, order_id: str, cancellation_id: str) -> CancellationView:
        """Poll until this cancellation (the order's latest) is canceled."""
        return await self.until(
            order_id,
            lambda v: (
                v.cancellation_id == cancellation_id and v.status is CancellationStatus.CANCELED
            ),
        )

    async def _undo(
        self, report: Report, order_id: str, *, require_repayment: bool = False
    ) -> CancellationView:
        view = await self.client.undo(
            DEMO_SHOP_ID,
            order_id,
            UndoRequest(
                reason="The customer wants the order after all",
                require_repayment=require_repayment,
            ),
        )
        asked = " asking the customer to pay again" if require_repayment else ""
        report.step(f"Merchant undoes the cancellation{asked} → {view.status.value}")
        return view

    async def _repay(self, report: Report, order_id: str, view: CancellationView) -> bool:
        """The customer pays what the undo asks for; True when the undo had asked for it."""
        due = view.repayment_due.amount if view.repayment_due else 0
        waiting = report.observe(
            view.status is CancellationStatus.AWAITING_REPAYMENT
            and view.order_status is OrderStatus.AWAITING_PAYMENT
            and due > 0,
            f"{view.status.value}: order {_status(view.order_status)}, "
            f"the customer owes {_money(due)}",
        )
        reference = f"PAY-{secrets.token_hex(3).upper()}"
        await self.client.confirm_repayment(
            DEMO_SHOP_ID, order_id, RepaymentRequest(reference=reference, amount=due)
        )
        report.step(f"The customer pays {_money(due)} again; the merchant confirms ({reference})")
        return waiting

    async def _payment_of(self, order_id: str) -> str:
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        return next(str(t.payment_id) for t in order.tenders if t.payment_id)

    async def _ledger(self, payment_id: str) -> list[str]:
        payment = await self.provider.get_payment(payment_id, account=self.account(DEMO_SHOP_ID))
        return [str(entry["type"]) for entry in payment["ledger"]]

    async def _balances_back(
        self, report: Report, customer: str, order_id: str, before: tuple[int, int]
    ) -> bool:
        """The customer has ``before`` (points, credits) again plus what the order took."""
        order = await self.client.get_order(DEMO_SHOP_ID, order_id)
        points, credits = (
            sum(t.amount for t in order.tenders if t.kind is kind)
            for kind in (TenderKind.POINTS, TenderKind.CREDITS)
        )
        balances = await self.store.get_balances(DEMO_SHOP_ID, customer)
        return report.check(
            balances == (before[0] + points, before[1] + credits),
            f"balances now {balances[0] if balances else '?'} points, "
            f"{balances[1] if balances else '?'} credits "
            f"({points:,} points and {credits:,} credits back)",
        )

    async def _stock(self, sku: str) -> int:
        return await self.store.get_stock(DEMO_SHOP_ID, sku) or 0

    async def _refused(
        self, report: Report, code: ErrorCode, attempt: Awaitable[object], what: str
    ) -> ErrorCode | None:
        """Run ``attempt``, which should be refused with ``code``; return the code it got."""
        try:
            await attempt
        except CancellationError as error:
            report.step(f"{what} → refused {error.code.value}: {error.message}")
            return error.code
        report.step(f"{what} → accepted, but {code.value} was expected")
        return None


@dataclass(frozen=True)
class Scenario:
    """One situation of the guide (from the catalog, :mod:`tools.situations`) and its walk."""

    situation: Situation
    walk: Callable[[DemoWalk, Report], Awaitable[None]]

    @property
    def key(self) -> str:
        """The guide's section: ``a``, ``d1``, …"""
        return self.situation.section or self.situation.key

    @property
    def name(self) -> str:
        """The guide's name of the situation."""
        return self.situation.name

    @property
    def title(self) -> str:
        """The guide's words."""
        return self.situation.title

    @property
    def expected(self) -> str:
        """What it should end in, as the catalog says."""
        return self.situation.expected


SCENARIOS = tuple(
    Scenario(situation(key), walk)
    for key, walk in (
        ("card_request_accepted", DemoWalk.request_accepted),
        ("requests_disabled_phoned", DemoWalk.phoned_instead),
        ("order_shipped", DemoWalk.shipped_refused),
        ("sold_out", DemoWalk.sold_out),
        ("undeliverable_area", DemoWalk.undeliverable),
        ("defective_not_restocked", DemoWalk.defective),
        ("rejected", DemoWalk.rejected),
        ("withdrawn", DemoWalk.withdrawn),
        ("card_authorized_voided", DemoWalk.voided),
        ("bank_transfer_confirmed", DemoWalk.bank_deposit),
        ("points_and_credits", DemoWalk.points_and_credits),
        ("zero_amount", DemoWalk.zero_amount),
        ("unpaid", DemoWalk.unpaid),
        ("declined_then_credits", DemoWalk.declined_then_credits),
        ("card_refund_pending", DemoWalk.pending_refund),
        ("quote_first", DemoWalk.quote_first),
        ("undo_recaptured", DemoWalk.undo_recaptured),
        ("undo_while_in_progress", DemoWalk.undo_in_progress),
        ("undo_with_repayment", DemoWalk.undo_needs_repayment),
        ("undo_bank_repaid", DemoWalk.undo_after_bank_deposit),
        ("partial_in_three_steps", DemoWalk.partial_in_three_steps),
        ("partial_undone", DemoWalk.partial_undone),
    )
)
"""Every situation of the store-admin guide, in its order."""


async def walk_all(walk: DemoWalk, *, on_report: Callable[[Report], None]) -> list[Report]:
    """Walk every scenario in turn; one that fails or times out does not stop the others."""
    reports = []
    for scenario in SCENARIOS:
        report = Report(
            scenario.key,
            scenario.name,
            scenario.title,
            scenario.expected,
            situation=scenario.situation,
        )
        began = time.monotonic()
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT_SECONDS):
                await scenario.walk(walk, report)
        except TimeoutError:
            report.got = f"timed out after {SCENARIO_TIMEOUT_SECONDS:.0f} s"
            report.ok = False
        except (CancellationError, ScenarioFailedError, ProviderError) as error:
            report.got = str(error)
            report.ok = False
        except Exception as error:  # a bug in one scenario must not hide the others' results
            report.got = f"{type(error).__name__}: {error}"
            report.ok = False
        report.seconds = time.monotonic() - began
        reports.append(report)
        on_report(report)
    return reports


# -- output ----------------------------------------------------------------------------------


def print_report(report: Report) -> None:
    """One scenario for people: title, steps, outcome, link."""
    print(f"\n{report.key}. {report.title}")
    for n, step in enumerate(report.steps, start=1):
        print(f"   {n}. {step}")
    print("   Outcome: " + (report.outcome[0] if report.outcome else report.got))
    for line in report.outcome[1:]:
        print(f"     {line}")
    if report.ui_url:
        print(f"   Web UI: {report.ui_url}")
    verdict = "OK" if report.ok else f"FAIL (expected {report.expected}; got {report.got})"
    print(f"   {verdict}  [{report.seconds:.1f} s]", flush=True)


def print_summary(reports: list[Report], seconds: float) -> None:
    """The table that ends the walk."""
    name_width = max(len(r.name) for r in reports) + 2
    width = max(len(r.expected) for r in reports) + 2
    print(f"\nSummary: {len(reports)} scenarios in {seconds:.1f} s")
    print(f"  {'scenario':<{name_width}}{'expected':<{width}}{'got':<{width}}result")
    for r in reports:
        # A failure's "got" can be a long error message; the scenario above shows it whole.
        got = r.got if len(r.got) < width else r.got[: width - 3] + "…"
        verdict = "OK" if r.ok else "FAIL"
        print(f"  {r.name:<{name_width}}{r.expected:<{width}}{got:<{width}}{verdict}")
    failed = sum(not r.ok for r in reports)
    print(f"\n{failed} failed" if failed else "\nall scenarios reached their expected outcome")


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Walk the seed against the running stack; 1 when a scenario missed its outcome."""
    parser = argparse.ArgumentParser(
        prog="python -m starter demo",
        description="Walk every situation of the store-admin guide against a running stack.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=DEFAULT_ENV_FILE,
        help=f"where to find unset variables (default {DEFAULT_ENV_FILE}, by the dev stack)",
    )
    args = parser.parse_args(argv)
    try:
        env = environment_with_fallback(os.environ, args.env_file)
        settings = Settings.from_env(env)
    except ConfigError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    ui_url = env.get("TEMPORAL_UI_URL") or DEFAULT_UI_URL
    if not settings.database_url:
        print(
            "demo: DATABASE_URL is not set and no dev stack environment was found at "
            f"{args.env_file}; start the stack with `python -m starter dev`",
            file=sys.stderr,
        )
        return 1
    inbox = env.get("EVENTS_INBOX_URL")
    return asyncio.run(_walk(settings, ui_url, as_json=args.json, inbox=inbox))


async def _walk(settings: Settings, ui_url: str, *, as_json: bool, inbox: str | None = None) -> int:
    try:
        await _check_sandbox(settings.provider_url)
        client = await CancellationClient.connect(settings)
    except CancellationError as error:
        hint = "is the dev stack running? (python -m starter dev)"
        print(f"demo: {error.message}; {hint}", file=sys.stderr)
        return 1
    provider = PaymentProviderClient(settings.provider_url)
    began = time.monotonic()
    try:
        walk = DemoWalk(client, provider, ui_url=ui_url, namespace=settings.temporal_namespace)
        if not as_json:
            print(f"Walking the store-admin guide against {settings.temporal_address}")
        reports = await walk_all(walk, on_report=(lambda _: None) if as_json else _printer(inbox))
    finally:
        await provider.aclose()
        await client.close()
    seconds = time.monotonic() - began
    failed = sum(not r.ok for r in reports)
    if as_json:
        result = {
            "scenarios": [r.as_json() for r in reports],
            "failed": failed,
            "seconds": round(seconds, 1),
        }
        print(json.dumps(result), flush=True)
    else:
        print_summary(reports, seconds)
    return 1 if failed else 0


def _printer(inbox: str | None) -> Callable[[Report], None]:
    """Print each scenario, and the events the dev stack's inbox received for it."""

    def print_with_events(report: Report) -> None:
        print_report(report)
        if inbox and report.view is not None:
            print_events_of(inbox, report.view.cancellation_id)

    return print_with_events


async def _check_sandbox(provider_url: str) -> None:
    """Fail early and clearly when the payment sandbox does not answer.

    Raises:
        CancellationError: ``provider_unavailable``.
    """
    try:
        # trust_env=False: a loopback URL must never go through a proxy from the environment.
        async with httpx.AsyncClient(timeout=3.0, trust_env=False) as http:
            (await http.get(f"{provider_url}/healthz")).raise_for_status()
    except httpx.HTTPError as error:
        raise CancellationError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"the payment sandbox at {provider_url} does not answer ({error})",
        ) from None


# -- text helpers ----------------------------------------------------------------------------


def _money(amount: int) -> str:
    return format_money(amount, CURRENCY)


def _status(status: OrderStatus | None) -> str:
    return status.value if status is not None else "unknown"


def _order_back(
    report: Report, view: CancellationView, status: OrderStatus = OrderStatus.PAID
) -> bool:
    """Check that the order went back to ``status`` (the cancellation came to nothing)."""
    return report.check(view.order_status is status, f"order back to {_status(view.order_status)}")


def _reason(code: ReasonCode) -> str:
    return {
        ReasonCode.CHANGED_MIND: "The customer changed their mind",
        ReasonCode.SHIPPING_DELAY: "The supplier is late; we can't ship this month",
        ReasonCode.SOLD_OUT: "Sold out: the last units went to another order",
        ReasonCode.DEFECTIVE: "Quality check failed: the item is defective",
        ReasonCode.UNDELIVERABLE_AREA: "The carrier does not serve the delivery address",
        ReasonCode.CUSTOMER_CONTACT: "The customer phoned to cancel",
        ReasonCode.OTHER: "Other",
    }[code]


def _acceptance_text(body: AcceptRequest) -> str:
    parts = [f"reason {body.reason_code.value}", f"refund {body.refund_method.value}"]
    if not body.restock:
        parts.append("no restock")
    if body.bank_account is not None:
        parts.append(f"to {body.bank_account.bank} {body.bank_account.masked_number}")
    return ", ".join(parts)


def _tender_text(tender: Tender) -> str:
    text = f"{_money(tender.amount)} by {tender.kind.value}"
    return f"{text} (sandbox payment {tender.payment_id})" if tender.payment_id else text


def _refund_text(line: RefundLine) -> str:
    text = (
        f"refund {line.refund_id}: {line.tender_kind.value} {_money(line.amount)} "
        f"{line.method.value} → {line.status.value}"
    )
    if line.provider_reference:
        text += f" ({line.provider_reference})"
    if line.confirmation_reference:
        text += f" (reference {line.confirmation_reference})"
    return text


def _items_text(items: list[CanceledItem]) -> str:
    return ", ".join(f"{item.item_id}×{item.quantity}" for item in items)


def _quantities_text(quantities: Mapping[str, int]) -> str:
    return ", ".join(f"{item_id}×{quantity}" for item_id, quantity in quantities.items()) or "none"


def _per_tender_text(view: CancellationView) -> str:
    """``points 2,000 succeeded, credits 2,000 succeeded, card 6,000 succeeded``."""
    return ", ".join(
        f"{line.tender_kind.value} {_money(line.amount)} {line.status.value}"
        for line in view.refunds
    )


def _quote_text(quote: Quote) -> str:
    lines = ", ".join(
        f"{line.tender_kind.value} {_money(line.amount)} {line.method.value}"
        for line in quote.lines
    )
    return f"{_money(quote.refundable)} refundable: {lines}"


def _marked(passed: bool, text: str) -> str:
    return text if passed else f"{text}  ← NOT AS EXPECTED"


def _all_ok(view: CancellationView) -> bool:
    """Every refund line succeeded and adds up to what was refundable (rule 8)."""
    refunded = view.refunded.amount if view.refunded else 0
    refundable = view.refundable.amount if view.refundable else 0
    every_line = all(line.status is RefundStatus.SUCCEEDED for line in view.refunds)
    return every_line and refunded == refundable


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
