"""The command line, run in-process against the real stack: Temporal dev server, the
store database and the provider sandbox, with a worker on the module's own task queue."""

from __future__ import annotations

import asyncio
import json
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.database import StoreRepository, create_pool
from activities.provider import ProviderActivities
from activities.provider_client import PaymentProviderClient
from activities.store import StoreActivities
from domain.cancellation import CancellationView
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderDocument, OrderItem, OrderStatus, Tender, TenderKind
from starter import card_payments, cli, cli_output
from starter.client import CancellationClient
from starter.config import Settings, dev_stack_environment
from starter.orders_file import read_orders_file
from tests.conftest import stock_writes_failing_with
from tools import demo
from tools.devstack import Endpoints
from worker import build_workers

ACCOUNT_NUMBER = "110-123-456789"
BANK_OPTIONS = ["--bank", "Shinhan", "--account-number", ACCOUNT_NUMBER, "--holder", "Kim Minji"]
EXAMPLE_FILE = Path(demo.__file__).with_name("demo_orders.json")


@dataclass
class System:
    """The services one test module shares: a worker, the client, the provider."""

    client: CancellationClient
    store: StoreRepository
    provider: PaymentProviderClient
    settings: Settings


@dataclass(frozen=True)
class Outcome:
    """What one CLI run did: its exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    dev_env: WorkflowEnvironment, database_url: str, provider_url: str
) -> AsyncIterator[System]:
    """A worker on a fresh task queue and the client the CLI is handed."""
    settings = Settings(database_url=database_url, provider_url=provider_url)
    task_queue = f"test-cli-{uuid.uuid4().hex}"
    pool: asyncpg.Pool = await create_pool(database_url)
    provider = PaymentProviderClient(provider_url)
    store = StoreRepository(pool)
    workers = build_workers(
        dev_env.client,
        [StoreActivities(store), ProviderActivities(provider)],
        task_queue=task_queue,
    )
    async with AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        client = CancellationClient(dev_env.client, store, task_queue=task_queue, provider=provider)
        yield System(client=client, store=store, provider=provider, settings=settings)
    await provider.aclose()
    await pool.close()


class Cli:
    """Runs ``python -m starter …`` in-process for one test, in a shop of its own."""

    def __init__(self, system: System, capsys: pytest.CaptureFixture[str]) -> None:
        self.system = system
        self.capsys = capsys
        self.shop_id = f"shop-{uuid.uuid4().hex[:8]}"
        self._orders = 0

    async def __call__(self, *argv: str) -> Outcome:
        self.capsys.readouterr()  # only this run's output
        code = await cli.run(list(argv), client=self.system.client, settings=self.system.settings)
        out, err = self.capsys.readouterr()
        return Outcome(code, out, err)

    async def ok(self, *argv: str) -> str:
        """Run a command that must succeed; its output for people."""
        outcome = await self(*argv)
        assert outcome.code == 0, outcome
        return outcome.out

    async def json(self, *argv: str) -> Any:
        """Run a command that must succeed with ``--json``; its one JSON document."""
        outcome = await self(*argv, "--json")
        assert outcome.code == 0, outcome
        return outcome.json

    async def order(
        self,
        *,
        status: OrderStatus = OrderStatus.PAID,
        tenders: list[tuple[TenderKind, int]] | None = None,
        card_behavior: dict[str, Any] | None = None,
    ) -> str:
        """An order of 30,000 KRW (two mugs, a tee, shipping); card tenders really paid."""
        self._orders += 1
        order_id = f"o{self._orders}"
        doc_tenders = []
        for n, (kind, amount) in enumerate(tenders or [(TenderKind.CARD, 30000)], start=1):
            payment_id = None
            if kind is TenderKind.CARD:
                payment = await card_payments.create_payment(
                    self.system.provider, amount, "KRW", behavior=card_behavior
                )
                payment_id = str(payment["id"])
            doc_tenders.append(
                Tender(tender_id=f"t{n}", kind=kind, amount=amount, payment_id=payment_id)
            )
        doc = OrderDocument(
            customer_id="cust-1",
            currency="KRW",
            status=status,
            shipping_fee=3000,
            items=[
                OrderItem(item_id="i1", sku="sku-mug", quantity=2, unit_price=10000),
                OrderItem(item_id="i2", sku="sku-tee", quantity=1, unit_price=7000),
            ],
            tenders=doc_tenders,
        )
        await self.system.store.put_order(self.shop_id, order_id, doc)
        return order_id

    async def wait_for(
        self, order_id: str, predicate: Callable[[CancellationView], bool]
    ) -> CancellationView:
        """Poll the order's latest cancellation until ``predicate`` holds."""
        for _ in range(300):
            view = await self.system.client.get_cancellation(self.shop_id, order_id)
            if predicate(view):
                return view
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not reached; view: {view}")

    async def wait_status(self, order_id: str, status: str) -> CancellationView:
        return await self.wait_for(order_id, lambda v: v.status == status)


@pytest_asyncio.fixture(loop_scope="session")
async def run(system: System, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(system, capsys)


# ---------------------------------------------------------------------------- the flow


async def test_request_status_accept_and_list_as_json(run: Cli) -> None:
    """A customer request, read back, accepted and listed, each answering one JSON document."""
    shop, order_id = run.shop_id, await run.order()
    started = await run.json("request", shop, order_id, "--reason-code", "changed_mind")
    assert started["created"] is True
    view = started["cancellation"]
    assert (view["status"], view["order_status"]) == ("requested", "cancellation_requested")
    assert view["initiated_by"] == "customer"
    assert set(view["allowed_actions"]) >= {"accept", "reject", "withdraw"}

    again = await run.json("request", shop, order_id)
    assert again["created"] is False
    assert again["cancellation"]["cancellation_id"] == view["cancellation_id"]
    status = (await run("--json", "status", shop, order_id)).json  # --json before the command
    assert status["cancellation_id"] == view["cancellation_id"]

    accept = ["accept", shop, order_id, "--reason-code", "changed_mind"]
    once = ["--cancellation", view["cancellation_id"], "--idempotency-key", f"accept-{order_id}"]
    accepted = await run.json(*accept, *once)
    assert accepted["status"] in ("in_progress", "canceled")
    assert accepted["refundable"] == {"amount": 30000, "currency": "KRW"}
    repeated = await run.json(*accept, *once)  # the same key takes effect once
    assert repeated["history"] == accepted["history"]
    await run.wait_status(order_id, "canceled")

    listed = await run.json("list", shop)
    assert [v["cancellation_id"] for v in listed["items"]] == [view["cancellation_id"]]
    assert listed["next_cursor"] is None
    assert (await run.json("list", shop, "--status", "requested", "in_progress"))["items"] == []
    of_order = await run.json("list", shop, "--order", order_id)
    assert [v["status"] for v in of_order["items"]] == ["canceled"]


async def test_human_output_shows_header_amounts_refunds_actions_and_history(run: Cli) -> None:
    shop, order_id = run.shop_id, await run.order()
    started = (await run.ok("request", shop, order_id, "--reason", "too slow")).splitlines()
    assert started[0] == "started a new cancellation"
    cancellation_id = started[1].split()[0]
    assert started[1] == f"{cancellation_id} requested  order: cancellation_requested"
    await run.ok("accept", shop, order_id, "--reason-code", "changed_mind")
    await run.wait_status(order_id, "canceled")

    lines = (await run.ok("status", shop, order_id)).splitlines()
    assert lines[0] == f"{cancellation_id} canceled  order: canceled"
    assert "refundable: 30,000 KRW  refunded: 30,000 KRW  method: original" in lines
    table = lines[lines.index("refunds:") + 1 :]
    assert table[0].split() == ["REFUND", "TENDER", "KIND", "METHOD", "AMOUNT", "STATUS", "DETAIL"]
    assert table[1].split()[1:7] == ["t1", "card", "original", "30,000", "KRW", "succeeded"]
    assert any(line.startswith("allowed actions: ") for line in lines)
    history = [line for line in lines if line.startswith("history")]
    assert history
    assert "accepted" in "\n".join(lines[lines.index(history[0]) :])

    listing = (await run.ok("list", shop)).splitlines()
    assert listing[0].split()[:3] == ["CANCELLATION", "ORDER", "STATUS"]
    assert listing[1].split()[:3] == [cancellation_id, order_id, "canceled"]


async def test_merchant_bank_deposit_shows_only_the_masked_account_then_confirms(run: Cli) -> None:
    """The account number entered on the command line is never printed, in text or JSON."""
    shop, order_id = run.shop_id, await run.order()
    merchant = ["--merchant", "--channel", "contact", "--reason-code", "customer_contact"]
    by_bank = ["--refund-method", "bank_deposit", *BANK_OPTIONS]
    started = await run.ok("request", shop, order_id, *merchant, *by_bank)
    waiting = await run.wait_for(
        order_id, lambda v: bool(v.refunds) and v.refunds[0].status == "awaiting_confirmation"
    )
    text = await run.ok("status", shop, order_id)
    as_json = await run("status", shop, order_id, "--json")
    for printed in (started, text, as_json.out):
        assert ACCOUNT_NUMBER not in printed
        assert ACCOUNT_NUMBER[-6:] not in printed  # only the last four digits show
    assert "to Shinhan **********6789" in text
    assert as_json.json["refunds"][0]["bank_account"]["masked_number"] == "**********6789"

    refund_id = waiting.refunds[0].refund_id
    await run.ok("confirm-refund", shop, order_id, refund_id, "--reference", "TX-42")
    final = await run.wait_status(order_id, "canceled")
    assert final.refunds[0].confirmation_reference == "TX-42"


async def test_reject_and_withdraw_restore_the_order(run: Cli) -> None:
    shop, rejected_order, withdrawn_order = run.shop_id, await run.order(), await run.order()
    await run.ok("request", shop, rejected_order)
    await run.ok("request", shop, withdrawn_order)

    rejected = await run.json("reject", shop, rejected_order, "--reason", "already packed")
    withdrawn = await run.json("withdraw", shop, withdrawn_order)
    assert (rejected["status"], rejected["order_status"]) == ("rejected", "paid")
    assert (withdrawn["status"], withdrawn["order_status"]) == ("withdrawn", "paid")
    assert withdrawn["history"][-1]["actor"] == "customer"


async def test_retry_refund_switches_a_declined_card_refund_to_credits(run: Cli) -> None:
    shop, order_id = run.shop_id, await run.order(card_behavior={"refund": "decline"})
    await run.ok("request", shop, order_id, "--merchant", "--reason-code", "sold_out")
    failed = await run.wait_for(order_id, lambda v: v.needs_attention == "refund_failed")
    assert "needs attention: refund_failed" in await run.ok("status", shop, order_id)

    refund_id = failed.refunds[0].refund_id
    await run.ok("retry-refund", shop, order_id, refund_id, "--method", "credits")
    final = await run.wait_status(order_id, "canceled")
    assert final.refunds[0].method == "credits"


async def test_quote_shows_the_refund_per_tender_and_changes_nothing(run: Cli) -> None:
    shop = run.shop_id
    order_id = await run.order(tenders=[(TenderKind.CARD, 20000), (TenderKind.POINTS, 10000)])
    quote = await run.json("quote", shop, order_id)
    assert quote["refundable"] == 30000
    assert [(line["tender_kind"], line["method"], line["amount"]) for line in quote["lines"]] == [
        ("card", "original", 20000),
        ("points", "original", 10000),
    ]
    text = (await run.ok("quote", shop, order_id, "--refund-method", "credits")).splitlines()
    assert text[0] == "refundable: 30,000 KRW"
    assert text[2].split() == ["t1", "card", "credits", "20,000", "KRW"]
    assert await run.system.store.cancellations_of_order(shop, order_id) == []


# ---------------------------------------------------------------------------- partial


async def test_merchant_cancels_some_items_then_quotes_and_cancels_the_rest(run: Cli) -> None:
    """``--item`` cancels those quantities; the order stays paid until the rest goes with
    the shipping fee, quoted first, and each step's refunds add up over the tenders."""
    shop = run.shop_id
    await run.system.store.put_balances(shop, "cust-1", 0, 0)
    order_id = await run.order(tenders=[(TenderKind.CARD, 20000), (TenderKind.POINTS, 10000)])
    merchant = ["request", shop, order_id, "--merchant", "--reason-code", "sold_out"]

    started = (await run.ok(*merchant, "--item", "i1:1", "--item", "i2:1")).splitlines()
    assert started[0] == "started a new cancellation"
    assert "items: i1×1, i2×1" in started
    first_id = started[1].split()[0]
    first = await run.wait_for(
        order_id, lambda v: v.cancellation_id == first_id and v.status == "canceled"
    )
    assert first.items is not None
    assert [(i.item_id, i.quantity) for i in first.items] == [("i1", 1), ("i2", 1)]
    assert first.refundable is not None and first.refundable.amount == 17000  # no shipping
    assert sum(line.amount for line in first.refunds) == 17000
    status = (await run.ok("status", shop, order_id)).splitlines()
    assert status[0] == f"{first_id} canceled  order: paid"
    assert "items: i1×1, i2×1" in status
    order = await run.system.store.get_order(shop, order_id)
    assert order.canceled_quantities == {"i1": 1, "i2": 1}

    beyond = await run(*merchant, "--item", "i1:2")
    assert beyond.code == cli_output.EXIT_USAGE
    assert beyond.err.startswith("error: validation_error: item i1: 2 to cancel but only 1 left")

    rest = await run.json("quote", shop, order_id)
    assert rest["refundable"] == 13000  # the last mug and the shipping fee
    left = {t: amount - sum(r.amount for r in first.refunds if r.tender_id == t)
            for t, amount in (("t1", 20000), ("t2", 10000))}  # fmt: skip
    assert {line["tender_id"]: line["amount"] for line in rest["lines"]} == left
    assert await run.json("quote", shop, order_id, "--item", "i1:1") == rest
    quoted = (await run.ok("quote", shop, order_id)).splitlines()
    assert quoted[0] == "refundable: 13,000 KRW"

    second = (await run.json(*merchant))["cancellation"]
    assert second["cancellation_id"] != first_id
    assert second["items"] is None
    last = await run.wait_for(
        order_id,
        lambda v: v.cancellation_id == second["cancellation_id"] and v.status == "canceled",
    )
    assert last.order_status == "canceled"
    assert {line.tender_id: line.amount for line in last.refunds} == left
    status = (await run.ok("status", shop, order_id)).splitlines()
    assert status[0] == f"{last.cancellation_id} canceled  order: canceled"
    assert not any(line.startswith("items: ") for line in status)
    earlier = await run.ok("status", shop, order_id, "--cancellation", first_id)
    assert "items: i1×1, i2×1" in earlier.splitlines()
    order = await run.system.store.get_order(shop, order_id)
    assert order.canceled_quantities == {"i1": 2, "i2": 1}
    assert await run.system.store.get_balances(shop, "cust-1") == (10000, 0)


async def test_items_beyond_the_order_exit_2_naming_the_item_and_start_nothing(
    run: Cli,
) -> None:
    shop, order_id = run.shop_id, await run.order()
    too_many = await run("request", shop, order_id, "--item", "i1:3")
    assert too_many.code == cli_output.EXIT_USAGE == 2
    assert too_many.err.startswith("error: validation_error: item i1: 3 to cancel but only 2")
    unknown = await run("--json", "quote", shop, order_id, "--item", "i9:1")
    assert unknown.code == 2
    assert unknown.json["error"]["code"] == "validation_error"
    assert "item i9 is not part of order" in unknown.json["error"]["message"]
    assert await run.system.store.cancellations_of_order(shop, order_id) == []

    customer = await run.json("request", shop, order_id, "--item", "i2:1")
    assert customer["cancellation"]["items"] == [{"item_id": "i2", "quantity": 1}]
    assert "items: i2×1" in (await run.ok("status", shop, order_id)).splitlines()


# ---------------------------------------------------------------------------- load-orders


def _orders_file(tmp_path: Path, shop_id: str, orders: dict[str, Any], **shop: Any) -> Path:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps({"shops": {shop_id: {**shop, "orders": orders}}}))
    return path


def _order(*tenders: dict[str, Any], status: str = "paid") -> dict[str, Any]:
    """An order document of 13,000 KRW (a mug and shipping) paid by ``tenders``."""
    return {
        "customer_id": "cust-1",
        "currency": "KRW",
        "status": status,
        "shipping_fee": 3000,
        "items": [{"item_id": "i1", "sku": "sku-mug", "quantity": 1, "unit_price": 10000}],
        "tenders": list(tenders),
    }


def _tender(tender_id: str, kind: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"tender_id": tender_id, "kind": kind, "amount": amount, **extra}


async def test_load_orders_creates_sandbox_payments_and_writes_the_store(
    run: Cli, tmp_path: Path
) -> None:
    """Card tenders get sandbox payments; loading the same file again reuses them."""
    shop_id, store = run.shop_id, run.system.store
    orders = {
        "captured": _order(_tender("t1", "card", 13000, payment={"capture": True})),
        "authorized": _order(
            _tender(
                "t1", "card", 13000, payment={"capture": False, "behavior": {"refund": "pending"}}
            )
        ),
        "mixed": _order(_tender("t1", "points", 3000), _tender("t2", "bank_transfer", 10000)),
        "unpaid": _order(status="awaiting_payment"),
    }
    path = _orders_file(
        tmp_path,
        shop_id,
        orders,
        settings={"customer_cancellation_requests": False, "undo_window": "P7D"},
        stock={"sku-mug": 5},
        customers={"cust-1": {"points": 700, "credits": 50}},
    )
    report = (await run.json("load-orders", str(path)))["shops"][shop_id]
    assert report["orders"] == dict.fromkeys(orders, "created")
    assert set(report["payments"]) == {"captured/t1", "authorized/t1"}

    captured = await store.get_order(shop_id, "captured")
    assert captured.tenders[0].payment_id == report["payments"]["captured/t1"]
    authorized = await store.get_order(shop_id, "authorized")
    payment = await run.system.provider.get_payment(str(authorized.tenders[0].payment_id))
    assert (payment["status"], payment["amount"]) == ("authorized", 13000)
    assert (await store.get_order(shop_id, "unpaid")).status is OrderStatus.AWAITING_PAYMENT
    assert not (await store.get_settings(shop_id)).customer_cancellation_requests
    assert await store.get_stock(shop_id, "sku-mug") == 5
    assert await store.get_balances(shop_id, "cust-1") == (700, 50)

    again = await run.ok("load-orders", str(path))
    assert f"shop {shop_id}: settings, 1 SKU(s) stocked" in again
    assert "replaced" in again
    reloaded = await store.get_order(shop_id, "captured")
    assert reloaded.tenders[0].payment_id == captured.tenders[0].payment_id


async def test_a_full_disk_exits_5_as_database_unavailable(run: Cli, tmp_path: Path) -> None:
    """PostgreSQL itself refuses the shop's stock writes as out of disk (SQLSTATE 53100):
    the CLI reports the outage with its code, not a traceback."""
    database_url = run.system.settings.database_url
    assert database_url is not None
    conn = await asyncpg.connect(database_url)
    try:
        async with stock_writes_failing_with(conn, run.shop_id, "53100", "could not extend file"):
            path = _orders_file(tmp_path, run.shop_id, {}, stock={"sku-mug": 5})
            outcome = await run("load-orders", str(path), "--json")
    finally:
        await conn.close()
    assert outcome.code == cli_output.EXIT_UNAVAILABLE, outcome
    assert outcome.json["error"]["code"] == "database_unavailable"
    assert "DiskFullError" in outcome.json["error"]["message"]


async def test_bad_orders_file_reports_every_problem_and_writes_nothing(
    run: Cli, tmp_path: Path
) -> None:
    path = _orders_file(
        tmp_path,
        run.shop_id,
        {
            "good": _order(_tender("t1", "bank_transfer", 13000)),
            "short": _order(_tender("t1", "bank_transfer", 1)),
            "odd": _order(_tender("t1", "points", 13000, payment={})),
        },
        stock={"sku-mug": -1},
        settings={"undo_window": "soon"},
    )
    outcome = await run("load-orders", str(path))
    assert outcome.code == cli_output.EXIT_USAGE
    assert outcome.err.startswith(f"error: validation_error: {path}: 4 problem(s)")
    for where in (
        f"shops.{run.shop_id}.orders.short: ",
        f"shops.{run.shop_id}.orders.odd.tenders[0].payment: only card tenders",
        f"shops.{run.shop_id}.stock.sku-mug: ",
        f"shops.{run.shop_id}.settings.undo_window: ",
    ):
        assert f"\n  {where}" in outcome.err
    store = run.system.store
    with pytest.raises(CancellationError) as missing:
        await store.get_order(run.shop_id, "good")
    assert missing.value.code is ErrorCode.ORDER_NOT_FOUND
    assert await store.get_stock(run.shop_id, "sku-mug") is None


def test_example_file_has_every_kind_of_order() -> None:
    """``tools/demo_orders.json`` is valid and covers the seed's payment situations."""
    orders_file, payments = read_orders_file(EXAMPLE_FILE)
    orders = orders_file.shops["demo-shop"].orders
    tender_kinds = {tuple(sorted(t.kind.value for t in doc.tenders)) for doc in orders.values()}
    assert tender_kinds >= {
        ("card",),
        ("bank_transfer",),
        ("credits", "points"),
        ("card", "points"),
        (),
    }
    assert {spec.capture for spec in payments.values()} == {True, False}
    assert any(doc.status is OrderStatus.AWAITING_PAYMENT for doc in orders.values())
    assert any(doc.total == 0 for doc in orders.values())


# ---------------------------------------------------------------------------- errors


async def test_unknown_order_exits_3_with_the_error_on_stderr(run: Cli) -> None:
    outcome = await run("status", run.shop_id, "no-such-order")
    assert outcome.code == cli_output.EXIT_NOT_FOUND == 3
    assert outcome.err.startswith("error: order_not_found: ")
    assert outcome.out == ""
    assert "Traceback" not in outcome.err


async def test_json_error_is_one_document_on_stdout(run: Cli) -> None:
    order_id = await run.order()
    outcome = await run("--json", "reject", run.shop_id, order_id, "--reason", "x")
    assert outcome.code == 3
    assert outcome.json == {
        "error": {
            "code": "cancellation_not_found",
            "message": f"order {order_id} has no cancellation",
        }
    }
    assert outcome.err == ""


async def test_shipped_order_exits_4_as_a_conflict(run: Cli) -> None:
    order_id = await run.order(status=OrderStatus.IN_TRANSIT)
    outcome = await run("request", run.shop_id, order_id)
    assert outcome.code == cli_output.EXIT_CONFLICT == 4
    assert outcome.err.startswith("error: order_shipped: ")
    assert "return" in outcome.err


async def test_invalid_bank_account_exits_2_without_echoing_the_number(run: Cli) -> None:
    """A validation error names the option, never the value typed."""
    order_id = await run.order()
    await run.ok("request", run.shop_id, order_id)
    bad = ["--bank", "Shinhan", "--account-number", "9876-5432!", "--holder", "Kim"]
    outcome = await run("accept", run.shop_id, order_id, "--reason-code", "other", *bad)
    assert outcome.code == cli_output.EXIT_USAGE == 2
    assert outcome.err.startswith("error: validation_error: --account-number: ")
    assert "9876" not in outcome.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["status", "s1"], "the following arguments are required: ORDER"),
        (["accept", "s1", "o1"], "the following arguments are required: --reason-code"),
        (["request", "s1", "o1", "--merchant"], "--reason-code: Field required"),
        (["request", "s1", "o1", "--no-restock"], "--no-restock: only for a merchant"),
        (["accept", "s1", "o1", "--reason-code", "other", "--bank", "X"], "go together"),
        (["list", "s1", "--order", "o1", "--limit", "5"], "--order lists all"),
        (["list", "s1", "--limit", "0"], "must be between 1 and"),
        (["request", "s1", "o1", "--item", "i1"], "argument --item: expected ITEM_ID:QUANTITY"),
        (["quote", "s1", "o1", "--item", "i1:0"], "argument --item: 'i1:0': quantity: "),
        (["request", "s1", "o1", "--merchant", "--item", ":2"], "argument --item: expected"),
    ],
    ids=[
        "missing-order",
        "missing-reason-code",
        "merchant-without-reason",
        "customer-with-accept-option",
        "partial-bank-account",
        "order-with-paging",
        "limit-zero",
        "item-without-quantity",
        "item-quantity-zero",
        "item-without-id",
    ],
)
async def test_bad_command_line_exits_2_before_connecting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage and validation errors are found before any service is asked (none is given here)."""
    code = await cli.run(argv, settings=Settings())
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "error: validation_error: " in err
    assert message in err


async def test_bad_command_line_with_json_answers_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = await cli.run(["quote", "s1", "o1", "--refund-method", "cash", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert json.loads(out)["error"]["code"] == "validation_error"
    assert err == ""


async def test_missing_database_url_exits_5_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code = await cli.run(["status", "s1", "o1"], settings=Settings(database_url=None))
    _, err = capsys.readouterr()
    assert code == cli_output.EXIT_UNAVAILABLE == 5
    assert err.startswith("error: database_unavailable: DATABASE_URL is not set")


@pytest.mark.parametrize(
    "code, status",
    [
        (ErrorCode.VALIDATION_ERROR, 2),
        (ErrorCode.REFUND_NOT_FOUND, 3),
        (ErrorCode.IDEMPOTENCY_KEY_REUSED, 4),
        (ErrorCode.UNDO_WINDOW_CLOSED, 4),
        (ErrorCode.PROVIDER_UNAVAILABLE, 5),
        (ErrorCode.TEMPORAL_UNAVAILABLE, 5),
        (ErrorCode.UNAUTHORIZED, 1),
    ],
)
def test_exit_code_follows_the_kind_of_error(code: ErrorCode, status: int) -> None:
    assert cli_output.exit_code(code) == status


# ---------------------------------------------------------- the dev stack's environment

# Variables a developer's shell may hold that would point the CLI elsewhere.
STACK_VARIABLES = [
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_API_KEY",
    "PAYMENT_PROVIDER_URL",
    "PAYLOAD_ENCRYPTION_KEY",
    "ADMIN_HOOK_TOKENS",
]


def _project_with_running_stack(root: Path, endpoints: Endpoints) -> Path:
    """A project folder whose dev stack wrote its ``env`` file as the dev stack writes it;
    returns a folder two levels inside the project."""
    project = root / "project"
    (project / ".devstack").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "shop"\n')
    (project / ".devstack" / "env").write_text(
        "# Written by the dev stack (python -m starter dev). In another shell:\n"
        f"#   source {project / '.devstack' / 'env'}\n"
        f"{endpoints.export_line(with_secrets=True)}\n"
    )
    (project / ".devstack" / "env").chmod(0o600)  # as the dev stack writes it
    inside = project / "docs" / "notes"
    inside.mkdir(parents=True)
    return inside


def _endpoints(system: System, dev_env: WorkflowEnvironment, **changes: Any) -> Endpoints:
    values: dict[str, Any] = {
        "temporal_address": dev_env.client.service_client.config.target_host,
        "ui_url": "http://127.0.0.1:1",
        "sandbox_url": system.settings.provider_url,
        "database_url": system.settings.database_url,
        "hook_url": "http://127.0.0.1:1",
        "admin_hook_port": 1,
        "inbox_url": "http://127.0.0.1:1",
        "secrets": {"CODEC_AUTH_TOKEN": "it's a 'quoted' secret"},
    }
    return Endpoints(**(values | changes))


@pytest.fixture
def shell_without_stack(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A shell that never ran ``source .devstack/env``."""
    for name in STACK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_status_and_list_inside_the_project_find_the_running_dev_stack(
    run: Cli, dev_env: WorkflowEnvironment, shell_without_stack: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ``source .devstack/env``: run from inside the project folder, the CLI reads it."""
    shop, order_id = run.shop_id, await run.order()
    started = await run.json("request", shop, order_id)
    inside = _project_with_running_stack(tmp_path, _endpoints(run.system, dev_env))
    shell_without_stack.chdir(inside)

    # No client and no settings: the CLI connects as the environment says, as from a shell.
    code = await cli.run(["status", shop, order_id, "--json"])
    out, err = run.capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["cancellation_id"] == started["cancellation"]["cancellation_id"]
    code = await cli.run(["list", shop, "--json"])
    out, err = run.capsys.readouterr()
    assert code == 0, err
    assert [v["order_id"] for v in json.loads(out)["items"]] == [order_id]


async def test_variables_the_shell_sets_win_over_the_dev_stack_file(
    run: Cli, dev_env: WorkflowEnvironment, shell_without_stack: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inside = _project_with_running_stack(tmp_path, _endpoints(run.system, dev_env))
    shell_without_stack.chdir(inside)
    shell_without_stack.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")

    code = await cli.run(["status", run.shop_id, "o1"])
    assert code == cli_output.EXIT_UNAVAILABLE
    assert "error: database_unavailable: " in run.capsys.readouterr().err

    env = dev_stack_environment({"DATABASE_URL": "mine", "TEMPORAL_ADDRESS": ""}, inside)
    assert env["DATABASE_URL"] == "mine"
    assert env["TEMPORAL_ADDRESS"] == dev_env.client.service_client.config.target_host
    assert env["CODEC_AUTH_TOKEN"] == "it's a 'quoted' secret"


async def test_an_env_file_others_may_read_or_write_is_not_the_dev_stacks(
    run: Cli, dev_env: WorkflowEnvironment, shell_without_stack: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One checked out with somebody's repository (0644) is never read: it could point the
    commands at servers of its author's choosing."""
    inside = _project_with_running_stack(tmp_path, _endpoints(run.system, dev_env))
    (tmp_path / "project" / ".devstack" / "env").chmod(0o644)
    assert dev_stack_environment({}, inside) == {}
    shell_without_stack.chdir(inside)
    assert await cli.run(["status", run.shop_id, "o1"]) == cli_output.EXIT_UNAVAILABLE
    assert "DATABASE_URL is not set" in run.capsys.readouterr().err


async def test_outside_any_project_no_dev_stack_file_is_read(
    shell_without_stack: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell_without_stack.chdir(tmp_path)
    assert dev_stack_environment({"A": "1"}, tmp_path) == {"A": "1"}
    assert await cli.run(["status", "s1", "o1"]) == cli_output.EXIT_UNAVAILABLE
    assert "DATABASE_URL is not set" in capsys.readouterr().err


# ---------------------------------------------------------------------------- dev and demo


@pytest.mark.parametrize("command", ["dev", "demo"])
def test_dev_and_demo_get_their_arguments_untouched(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        received.append(argv)
        return 7

    fake = types.ModuleType(cli_output.PASS_THROUGH[command])
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, cli_output.PASS_THROUGH[command], fake)

    assert cli.main(["--json", command, "--fresh", "x", "-h"]) == 7
    assert received == [["--fresh", "x", "-h"]]


async def test_dev_is_refused_inside_a_running_event_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run`` serves the other commands; the dev stack needs ``main``'s own event loop."""
    assert await cli.run(["dev"]) == cli_output.EXIT_USAGE
    assert "start it through main()" in capsys.readouterr().err
