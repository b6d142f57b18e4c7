"""The order file of ``load-orders``: shops with their settings, stock, customers and
orders (with the sandbox payments to create for their card tenders), read, checked and
written into the store in one place. The CLI (``load-orders``), the demo and the dev
stack's demo data all use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic_core import ErrorDetails

from activities.provider_client import PaymentProviderClient, ProviderError, ProviderUnavailable
from domain.errors import CancellationError, ErrorCode
from domain.money import Amount
from domain.order import Identifier, OrderDocument
from domain.shop import ShopSettings
from starter import card_payments
from starter.client import CancellationClient
from starter.config import Settings
from starter.http.models import MAX_STOCK
from starter.providers import provider_client


class ShopLoaded(BaseModel):
    """What load-orders wrote for one shop."""

    settings: bool
    stock: int
    customers: int
    orders: dict[str, Literal["created", "replaced"]]
    payments: dict[str, str]
    """``<order>/<tender>`` → the sandbox payment id created (or found again) for it."""


class LoadReport(BaseModel):
    """What ``load-orders`` answers."""

    file: str
    shops: dict[str, ShopLoaded]


PAYMENT_PLACEHOLDER = "to-be-created-by-load-orders"
"""Stands in for a payment id while the file is validated, before payments exist."""


class SandboxBehavior(BaseModel):
    """The provider sandbox's test knobs for a card payment."""

    model_config = ConfigDict(extra="forbid")

    refund: Literal["succeed", "decline", "pending"] | None = None
    settle_after_seconds: Annotated[float, Field(ge=0)] | None = None
    recapture: Literal["restorable", "reauth_required", "not_possible"] | None = None
    recapture_window_seconds: Annotated[float, Field(ge=0)] | None = None


class PaymentSpec(BaseModel):
    """A card payment for load-orders to create in the sandbox."""

    model_config = ConfigDict(extra="forbid")

    capture: bool = True
    """``false`` leaves the payment only authorized (a cancellation then voids it)."""
    behavior: SandboxBehavior = SandboxBehavior()


class CustomerBalances(BaseModel):
    """A customer's points and credits."""

    model_config = ConfigDict(extra="forbid")

    points: Amount = 0
    credits: Amount = 0


class ShopData(BaseModel):
    """One shop of a load-orders file."""

    model_config = ConfigDict(extra="forbid")

    settings: ShopSettings | None = None
    stock: dict[Identifier, Annotated[StrictInt, Field(ge=0, le=MAX_STOCK)]] = {}
    customers: dict[Identifier, CustomerBalances] = {}
    orders: dict[Identifier, OrderDocument] = {}


class OrdersFile(BaseModel):
    """A load-orders file (the format is in the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    shops: dict[Identifier, ShopData]


TenderRef = tuple[str, str, int]
"""(shop id, order id, index of the tender in the order)."""


def read_orders_file(path: Path) -> tuple[OrdersFile, dict[TenderRef, PaymentSpec]]:
    """Read and validate a load-orders file; nothing is written.

    Returns:
        The file, with a placeholder payment id on every tender that asks for a
        payment, and those payments to create.

    Raises:
        CancellationError: ``validation_error`` listing every problem with its path.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, f"can't read {path}: {err.strerror}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, f"{path} is not JSON: {err}") from None
    problems: list[str] = []
    payments = _take_payment_specs(raw, problems)
    try:
        orders_file = OrdersFile.model_validate(raw)
    except ValidationError as err:
        problems += [f"{_path(e['loc'])}: {e['msg']}" for e in error_details(err)]
    if problems:
        listed = "".join(f"\n  {problem}" for problem in problems)
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            f"{path}: {len(problems)} problem(s), nothing was loaded:{listed}",
        )
    return orders_file, payments


def _take_payment_specs(raw: Any, problems: list[str]) -> dict[TenderRef, PaymentSpec]:
    """Move each tender's ``payment`` out of the raw file, leaving a placeholder id.

    The order documents can then be validated whole before any payment exists.
    """
    specs: dict[TenderRef, PaymentSpec] = {}
    for (shop_id, order_id, index), tender in _raw_tenders(raw):
        if "payment" not in tender:
            continue
        where = _path(("shops", shop_id, "orders", order_id, "tenders", index))
        spec = tender.pop("payment")
        if tender.get("kind") != "card":
            problems.append(f"{where}.payment: only card tenders are paid through the provider")
            continue
        if tender.get("payment_id") is not None:
            problems.append(f"{where}: give either payment_id or payment, not both")
            continue
        tender["payment_id"] = PAYMENT_PLACEHOLDER
        try:
            specs[shop_id, order_id, index] = PaymentSpec.model_validate(spec)
        except ValidationError as err:
            problems += [
                f"{where}.payment{_path(e['loc'], first=False)}: {e['msg']}"
                for e in error_details(err)
            ]
    return specs


def _raw_tenders(raw: Any) -> Iterator[tuple[TenderRef, dict[str, Any]]]:
    """Every tender object of the raw file; anything malformed is left to the models."""
    shops = raw.get("shops") if isinstance(raw, dict) else None
    for shop_id, shop in (shops or {}).items() if isinstance(shops, dict) else ():
        orders = shop.get("orders") if isinstance(shop, dict) else None
        for order_id, order in orders.items() if isinstance(orders, dict) else ():
            tenders = order.get("tenders") if isinstance(order, dict) else None
            for index, tender in enumerate(tenders if isinstance(tenders, list) else ()):
                if isinstance(tender, dict):
                    yield (shop_id, order_id, index), tender


def _path(loc: Sequence[int | str], *, first: bool = True) -> str:
    """``("shops", "s1", "orders", "o1", "tenders", 0)`` → ``shops.s1.orders.o1.tenders[0]``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.removeprefix(".") if first else text


async def load_orders(
    client: CancellationClient,
    settings: Settings,
    orders_file: OrdersFile,
    payments: dict[TenderRef, PaymentSpec],
    *,
    source: Path,
) -> LoadReport:
    """Create the file's sandbox payments, then write its shops into the store.

    Payments come first: they are idempotent and don't touch the store, so a provider
    that does not answer leaves the store as it was.
    """
    payment_ids = await _create_payments(settings, orders_file, payments)
    shops = {
        shop_id: await _write_shop(client, shop_id, shop, payment_ids)
        for shop_id, shop in orders_file.shops.items()
    }
    return LoadReport(file=str(source), shops=shops)


async def _create_payments(
    settings: Settings,
    orders_file: OrdersFile,
    payments: dict[TenderRef, PaymentSpec],
) -> dict[TenderRef, str]:
    if not payments:
        return {}
    # At the provider the settings name (PAYMENT_PROVIDER): sandbox payments, or Stripe
    # PaymentIntents paid with Stripe's test card (localstripe in the dev stack). The
    # sandbox's test behaviours (declines, pending refunds…) have no Stripe equivalent.
    provider = provider_client(settings)
    sandbox = settings.payment_provider == "sandbox"
    try:
        return {
            ref: await _create_payment(
                provider,
                orders_file,
                ref,
                spec if sandbox else spec.model_copy(update={"behavior": SandboxBehavior()}),
                settings.provider_accounts.get(ref[0]),
            )
            for ref, spec in payments.items()
        }
    finally:
        await provider.aclose()


async def _create_payment(
    provider: PaymentProviderClient,
    orders_file: OrdersFile,
    ref: TenderRef,
    spec: PaymentSpec,
    account: str | None,
) -> str:
    shop_id, order_id, index = ref
    order = orders_file.shops[shop_id].orders[order_id]
    tender = order.tenders[index]
    where = _path(("shops", shop_id, "orders", order_id, "tenders", index, "payment"))
    try:
        payment = await card_payments.create_payment(
            provider,
            tender.amount,
            order.currency,
            capture=spec.capture,
            behavior=spec.behavior.model_dump(exclude_none=True) or None,
            idempotency_key=f"load~{shop_id}~{order_id}~{tender.tender_id}",
            account=account,
        )
    except ProviderUnavailable as err:
        raise CancellationError(ErrorCode.PROVIDER_UNAVAILABLE, f"{where}: {err}") from None
    except ProviderError as err:
        if err.code == ErrorCode.IDEMPOTENCY_KEY_REUSED:
            raise CancellationError(
                ErrorCode.IDEMPOTENCY_KEY_REUSED,
                f"{where}: this tender's payment was created before with another amount or"
                " behavior; give the tender or the order a new id",
            ) from None
        raise CancellationError(ErrorCode.VALIDATION_ERROR, f"{where}: {err}") from None
    return str(payment["id"])


async def _write_shop(
    client: CancellationClient, shop_id: str, shop: ShopData, payment_ids: dict[TenderRef, str]
) -> ShopLoaded:
    if shop.settings is not None:
        await client.put_settings(shop_id, shop.settings)
    for sku, available in shop.stock.items():
        await client.store.put_stock(shop_id, sku, available)
    for customer_id, balances in shop.customers.items():
        await client.store.put_balances(shop_id, customer_id, balances.points, balances.credits)
    orders: dict[str, Literal["created", "replaced"]] = {}
    created_payments: dict[str, str] = {}
    for order_id, doc in shop.orders.items():
        paid = {
            doc.tenders[index].tender_id: payment_id
            for (paid_shop, paid_order, index), payment_id in payment_ids.items()
            if (paid_shop, paid_order) == (shop_id, order_id)
        }
        orders[order_id] = await _put_order(client, shop_id, order_id, _with_payments(doc, paid))
        created_payments |= {f"{order_id}/{tender}": pid for tender, pid in paid.items()}
    return ShopLoaded(
        settings=shop.settings is not None,
        stock=len(shop.stock),
        customers=len(shop.customers),
        orders=orders,
        payments=created_payments,
    )


def _with_payments(doc: OrderDocument, payment_ids: dict[str, str]) -> OrderDocument:
    """The document with the created payments' ids in place of the placeholders."""
    tenders = [
        t.model_copy(update={"payment_id": payment_ids[t.tender_id]})
        if t.tender_id in payment_ids
        else t
        for t in doc.tenders
    ]
    return doc.model_copy(update={"tenders": tenders})


async def _put_order(
    client: CancellationClient, shop_id: str, order_id: str, doc: OrderDocument
) -> Literal["created", "replaced"]:
    try:
        created = await client.put_order(shop_id, order_id, doc)
    except CancellationError as err:  # e.g. the order has an open cancellation
        where = _path(("shops", shop_id, "orders", order_id))
        raise CancellationError(err.code, f"{where}: {err.message}") from None
    return "created" if created else "replaced"


def error_details(err: ValidationError) -> list[ErrorDetails]:
    # Never the input: it may hold a bank account number.
    return err.errors(include_url=False, include_context=False, include_input=False)
