"""The chaos run's driver: cancellations of every shape, through the admin hook, come what may.

Each order gets a *shape* (:data:`SHAPES`), one situation of the catalog
(:mod:`tools.situations`), which says how the order is paid and what it must end in; the shape
says what the customer and the merchant do with it, step by step, over HTTP, as a store admin
and a backend service would.
Before each step the driver writes down what the step implies (:class:`OrderRecord`): the
final status of each cancellation, the order's status, every card movement, stock and
balances. The reconciler compares that with what actually happened.

Every request survives outages: connection errors, timeouts, 5xx answers and the hook's
"still in progress" are retried with the same ``Idempotency-Key`` (so an action that took
effect before its answer was lost is not taken twice), until :data:`CALL_DEADLINE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from tools.chaos_reconcile import ChaosRecord, OrderRecord
from tools.situations import BY_KEY, Situation

SHOP_ID = "chaos-shop"
CURRENCY = "EUR"
SKUS = tuple(f"sku-{n}" for n in range(6))
"""Few SKUs, shared by every order: concurrent restocks and reservations meet on them."""
CUSTOMERS = tuple(f"customer-{n}" for n in range(8))
"""Few customers, shared: concurrent returns and take-backs of balances meet on them."""
INITIAL_STOCK = 100_000
"""Enough that an undo never runs out of stock: out_of_stock is a refusal, not a fault."""
RECAPTURE_WINDOW_SECONDS = 400 * 24 * 3600
"""Every card payment's recapture window, in provider time: longer than all the key-expiry
faults' clock jumps together (25 h each), so an undo is never refused for a window the chaos
itself closed."""
REVERSAL_RETRIES = (0, 1)
"""How often the merchant retries a reversed refund as is before switching it to credits."""
BANK_ACCOUNT = {"bank": "Chaos Bank", "account_number": "110-123-456789", "holder": "C. Haos"}

ATTEMPT_TIMEOUT = httpx.Timeout(45.0, connect=3.0)
"""One HTTP attempt: a start waits up to 30 s for its run to open, an update for the worker."""
CALL_DEADLINE_SECONDS = 200.0
"""How long one request is retried: longer than the hook's 2-minute claim lease, after which a
request whose process lost its answer (the claim was never released) can be taken over."""
STEP_DEADLINE_SECONDS = 240.0
"""How long the driver waits for a cancellation to reach the state its next step needs. A
SIGKILLed worker's activities are retried only after their 30 s start-to-close timeout."""
REFUSALS_RETRIED = 5
"""How often an action refused as not allowed *yet* is sent again (see :meth:`OrderDriver.act`)."""
POLL_FIRST_SECONDS = 0.3
POLL_MAX_SECONDS = 2.0
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 3.0

_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
SANDBOX_PATHS = ("/v1/payments",)
"""The provider sandbox's routes the driver calls itself (the hook's all start /v1/shops)."""
_ACTION_NAMES = {"confirm": "confirm_refund", "retry": "retry_refund"}
"""Route names whose action (``allowed_actions``) is named differently."""


class DriverGaveUpError(Exception):
    """A request never got a usable answer before its deadline."""


class ScenarioAbortedError(Exception):
    """A step got an answer that makes the rest of the shape pointless (recorded as a problem)."""


# -- requests that survive outages ---------------------------------------------------------------


@dataclass
class ResilientHttp:
    """An HTTP client that retries what an outage causes, and counts why it retried."""

    http: httpx.AsyncClient
    retries: Counter[str] = field(default_factory=Counter)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The first answer that is not an outage.

        Raises:
            DriverGaveUpError: Only outages until :data:`CALL_DEADLINE_SECONDS`.
        """
        deadline = time.monotonic() + CALL_DEADLINE_SECONDS
        delay = RETRY_FIRST_SECONDS
        while True:
            reason: str | None
            try:
                answer = await self.http.request(method, url, json=json, headers=headers)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError:
                reason = "connection refused or cut"
            else:
                reason = _outage(answer)
                if reason is None:
                    return answer
            if httpx.URL(url).path.startswith(SANDBOX_PATHS):
                # The driver pays its orders in the sandbox itself: keep its outages apart, so
                # a 500 from the hook can't hide among the test double's.
                reason = f"sandbox {reason}"
            self.retries[reason] += 1
            if time.monotonic() > deadline:
                raise DriverGaveUpError(f"{method} {url}: {reason} until the deadline")
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 1.7, RETRY_MAX_SECONDS)


def _outage(answer: httpx.Response) -> str | None:
    """Why this answer means "try again later", or None when it is the answer."""
    code = _error_code(answer)
    if answer.status_code in _RETRIED_STATUSES:
        return f"{answer.status_code} {code or 'error'}"
    if answer.status_code == 409 and "still in progress" in _error_message(answer):
        return "409 same key still in progress"
    return None


def _error_code(answer: httpx.Response) -> str | None:
    try:
        error = answer.json().get("error") or {}
    except (ValueError, AttributeError):
        return None
    return str(error.get("code")) if error.get("code") else None


def _error_message(answer: httpx.Response) -> str:
    try:
        return str((answer.json().get("error") or {}).get("message", ""))
    except (ValueError, AttributeError):
        return ""


@dataclass
class Endpoints:
    """Where the driver sends requests, and as whom."""

    hook_url: str
    sandbox_url: str
    token: str
    shop_id: str = SHOP_ID


# -- one order -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """An order line."""

    item_id: str
    sku: str
    quantity: int
    unit_price: int


@dataclass
class Tender:
    """How (part of) the order was paid; card tenders get a sandbox payment."""

    tender_id: str
    kind: str
    amount: int
    capture: bool = True
    behavior: dict[str, Any] = field(default_factory=dict)
    payment_id: str | None = None


class OrderDriver:
    """Places one order and walks it through its shape, writing down what each step implies."""

    def __init__(
        self, endpoints: Endpoints, http: ResilientHttp, record: OrderRecord, rng: random.Random
    ) -> None:
        self._endpoints = endpoints
        self._http = http
        self.record = record
        self.rng = rng
        self.items: list[Item] = []
        self.tenders: list[Tender] = []
        self.shipping_fee = 0
        self.status_before = "paid"
        self._steps = 0

    # ------------------------------------------------------------------ building the order

    def basket(self, lines: int = 2) -> list[Item]:
        """Random items from the shared SKUs."""
        skus = self.rng.sample(SKUS, lines)
        return [
            Item(
                item_id=f"i{n}",
                sku=sku,
                quantity=self.rng.randint(1, 3),
                unit_price=self.rng.randrange(500, 20_000, 10),
            )
            for n, sku in enumerate(skus, start=1)
        ]

    def total(self) -> int:
        """Items plus shipping."""
        return sum(i.quantity * i.unit_price for i in self.items) + self.shipping_fee

    @property
    def situation(self) -> Situation:
        """The catalog's situation this order's shape walks.

        Raises:
            KeyError: The shape is no situation of the catalog (a test's probe).
        """
        return BY_KEY[self.record.shape]

    def card(self, amount: int, *, capture: bool = True, **behavior: Any) -> Tender:
        """A card tender with its sandbox behavior."""
        behavior.setdefault("recapture_window_seconds", RECAPTURE_WINDOW_SECONDS)
        return Tender(f"t{len(self.tenders) + 1}", "card", amount, capture, dict(behavior))

    def paid_as_situation(self, total: int, **card: Any) -> list[Tender]:
        """The tenders of the situation's mix for ``total``; ``card`` adds to (or overrides)
        the situation's sandbox behavior of the card."""
        situation = self.situation
        tenders = []
        for n, (kind, amount) in enumerate(situation.split(total), start=1):
            if kind == "card":
                behavior = {**situation.card_behavior, **card}
                tender = self.card(amount, capture=situation.capture, **behavior)
                tender.tender_id = f"t{n}"
            else:
                tender = Tender(f"t{n}", kind, amount)
            tenders.append(tender)
        return tenders

    async def place(
        self,
        tenders: Callable[[int], list[Tender]] | None = None,
        *,
        lines: int = 2,
        first_sku: str | None = None,
        **card: Any,
    ) -> None:
        """Create the card payments in the sandbox, then the order in the store.

        ``tenders`` gets the order's total and splits it; by default the order is paid as the
        shape's situation says (:meth:`paid_as_situation`, with ``card``). ``first_sku``
        replaces the first item's SKU (one no other order holds).
        """
        self.items = self.basket(lines)
        if first_sku is not None:
            first = self.items[0]
            self.items[0] = Item(first.item_id, first_sku, first.quantity, first.unit_price)
        self.shipping_fee = self.rng.choice([0, 0, 300, 500])
        self.status_before = self.rng.choice(["paid", "paid", "preparing", "ready_to_ship"])
        if tenders is None:
            self.tenders = self.paid_as_situation(self.total(), **card)
        else:
            self.tenders = tenders(self.total())
        for tender in self.tenders:
            if tender.kind == "card":
                tender.payment_id = await self._create_payment(tender)
                self.record.payments.append(tender.payment_id)
        body = {
            "customer_id": self.record.customer_id,
            "currency": CURRENCY,
            "status": self.status_before,
            "shipping_fee": self.shipping_fee,
            "items": [asdict(i) for i in self.items],
            "tenders": [
                {"tender_id": t.tender_id, "kind": t.kind, "amount": t.amount}
                | ({"payment_id": t.payment_id} if t.payment_id else {})
                for t in self.tenders
            ],
        }
        await self._expect("PUT", self._order_path(), body, step="place order", statuses=(200, 201))
        # Nothing happened yet: a shape that stops here leaves the order as placed.
        self.record.expected_order_status = self.status_before

    async def _create_payment(self, tender: Tender) -> str:
        body = {
            "amount": tender.amount,
            "currency": CURRENCY,
            "capture": tender.capture,
            "behavior": tender.behavior,
        }
        key = f"{self.record.order_id}:{tender.tender_id}:payment"
        answer = await self._http.request(
            "POST",
            f"{self._endpoints.sandbox_url}/v1/payments",
            json=body,
            headers={"Idempotency-Key": key},
        )
        if answer.status_code != 201:
            raise self.problem(f"create payment: {answer.status_code} {answer.text[:200]}")
        payment_id: str = answer.json()["id"]
        return payment_id

    # ------------------------------------------------------------------ actions

    async def start(
        self,
        *,
        merchant: bool,
        accept: dict[str, Any] | None = None,
        items: list[dict[str, Any]] | None = None,
        channel: str | None = None,
    ) -> str:
        """Start a cancellation: the customer's request, or the merchant's accepted one."""
        body: dict[str, Any] = {
            "initiated_by": "merchant" if merchant else "customer",
            "channel": channel or ("admin" if merchant else "my_account"),
            "reason_code": "changed_mind",
            "reason": "chaos run",
        }
        if merchant:
            body["accept"] = accept or {"reason_code": "sold_out", "reason": "chaos run"}
            body["reason_code"] = body["accept"]["reason_code"]
        if items is not None:
            body["items"] = items
        view = await self._expect(
            "POST", self._order_path("/cancellation"), body, step="start", statuses=(200, 201)
        )
        cancellation_id: str = view["cancellation_id"]
        return cancellation_id

    async def act(
        self,
        cancellation_id: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        statuses: tuple[int, ...] = (200,),
        error_code: str | None = None,
    ) -> dict[str, Any]:
        """``POST …/cancellations/{id}/{action}``; anything but ``statuses`` is a problem.

        The driver decides on the database's view, which runs ahead of the workflow while the
        workflow's store activity is retried (the write committed, its answer was lost). An
        action refused with ``invalid_transition`` then waits until the workflow itself allows
        it and is sent again, with the same key (a refused update left nothing behind).
        """
        path = f"/v1/shops/{self._endpoints.shop_id}/cancellations/{cancellation_id}/{action}"
        name = _ACTION_NAMES.get(action.rsplit("/", 1)[-1], action)
        key = self._next_key(action)
        for _ in range(REFUSALS_RETRIED):
            answer = await self._send("POST", path, body or {}, key, step=action)
            if (
                answer.status_code == 409
                and _error_code(answer) == "invalid_transition"
                and 409 not in statuses
            ):
                self._http.retries["409 invalid_transition (workflow behind the database)"] += 1
                await self.until(
                    cancellation_id,
                    f"{name} allowed",
                    lambda view: name in view["allowed_actions"],
                    live=True,
                )
                continue
            break
        return self._check(answer, step=action, statuses=statuses, error_code=error_code)

    async def until(
        self,
        cancellation_id: str,
        what: str,
        ready: Callable[[dict[str, Any]], bool],
        *,
        live: bool = False,
    ) -> dict[str, Any]:
        """Poll the cancellation until ``ready``: the database's view (cheap, no Temporal
        query), or with ``live`` the workflow's own (a query)."""
        if live:
            url = (
                f"{self._endpoints.hook_url}/v1/shops/{self._endpoints.shop_id}"
                f"/cancellations/{cancellation_id}"
            )
        else:
            url = f"{self._endpoints.hook_url}{self._order_path('/cancellations')}"
        deadline = time.monotonic() + STEP_DEADLINE_SECONDS
        delay = POLL_FIRST_SECONDS
        last = "nothing"
        while True:
            try:
                answer = await self._http.request("GET", url, headers=self._auth())
            except DriverGaveUpError as err:
                raise self.problem(f"waiting for {what}: {err}") from None
            if answer.status_code == 200:
                payload = answer.json()
                for view in [payload] if live else payload["items"]:
                    if view["cancellation_id"] == cancellation_id:
                        if ready(view):
                            return dict(view)
                        last = f"{view['status']}, needs_attention {view['needs_attention']}"
            if time.monotonic() > deadline:
                raise self.problem(
                    f"{cancellation_id} did not reach {what} in {STEP_DEADLINE_SECONDS:.0f} s"
                    f" (last seen: {last})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX_SECONDS)

    async def bulk_cancel(self, sku: str) -> str:
        """Cancel every open order holding ``sku`` with one bulk job (this order only: the
        SKU is its own); wait for the job to complete; the cancellation it started."""
        base = f"/v1/shops/{self._endpoints.shop_id}/bulk-cancellations"
        job = await self._expect(
            "POST", base, {"sku": sku, "reason": "chaos run"}, step="bulk cancel", statuses=(202,)
        )
        deadline = time.monotonic() + STEP_DEADLINE_SECONDS
        url = f"{self._endpoints.hook_url}{base}/{job['bulk_id']}"
        while job["status"] == "running":
            if time.monotonic() > deadline:
                raise self.problem(f"bulk job {job['bulk_id']} still running: {job['counts']}")
            await asyncio.sleep(POLL_FIRST_SECONDS)
            try:
                answer = await self._http.request("GET", url, headers=self._auth())
            except DriverGaveUpError as err:
                raise self.problem(f"waiting for the bulk job: {err}") from None
            if answer.status_code == 200:
                job = answer.json()
        try:
            answer = await self._http.request("GET", f"{url}/items", headers=self._auth())
        except DriverGaveUpError as err:
            raise self.problem(f"the bulk job's outcomes: {err}") from None
        outcomes = self._check(answer, step="bulk outcomes", statuses=(200,))["items"]
        if len(outcomes) != 1 or outcomes[0]["outcome"] != "started":
            raise self.problem(f"bulk job {job['bulk_id']}: {job['status']}, {outcomes}")
        cancellation_id: str = outcomes[0]["cancellation_id"]
        return cancellation_id

    async def until_status(self, cancellation_id: str, status: str) -> dict[str, Any]:
        """Wait until the cancellation is ``status``."""
        return await self.until(cancellation_id, status, lambda v: v["status"] == status)

    # ------------------------------------------------------------------ what the steps imply

    def expect(self, statuses: list[str], order_status: str) -> None:
        """The cancellations' final statuses (oldest first) and the order's final status."""
        self.record.expected_statuses = statuses
        self.record.expected_order_status = order_status

    def expect_end(self) -> None:
        """What the situation must end in: each of its cancellations, and the order canceled
        or as it was placed."""
        situation = self.situation
        assert situation.ends is not None, f"{situation.key} ends in a refusal"
        order_status = "canceled" if situation.order_canceled else self.status_before
        self.expect([situation.ends] * situation.parts, order_status)

    async def begin(
        self, tenders: Callable[[int], list[Tender]] | None = None, **card: Any
    ) -> None:
        """Place the order (:meth:`place`) and write down what its situation implies for the
        whole order: its end, the money paid back (unless nothing is) and the items back in
        stock (when the order ends canceled and they go back)."""
        await self.place(tenders, **card)
        situation = self.situation
        self.expect_end()
        if situation.paid_back != "nothing":
            self.expect_paid_back()
        if situation.restock and situation.order_canceled:
            self.expect_restock()

    def expect_paid_back(
        self, *, method: str | None = None, items: list[Item] | None = None
    ) -> None:
        """What accepting (and finishing) a cancellation of ``items`` (all: None) pays back,
        by ``method`` (by default where the situation's money finally goes).

        Only single-tender orders are partly canceled, so a part's amount is plain arithmetic.
        """
        method = method or self.situation.paid_back
        if items is not None:
            (tender,) = self.tenders
            amount = sum(i.quantity * i.unit_price for i in items)
            self._pay_back(tender, amount, method)
            return
        for tender in self.tenders:
            self._pay_back(tender, tender.amount, method)

    def _pay_back(self, tender: Tender, amount: int, method: str) -> None:
        match tender.kind:
            case "points":
                self.record.points_delta += amount
            case "credits":
                self.record.credits_delta += amount
            case "card" | "bank_transfer" if method == "credits":
                self.record.credits_delta += amount
            case "card" if method == "original":
                assert tender.payment_id is not None
                movements = self.record.movements(tender.payment_id)
                if tender.capture:
                    movements.refund += amount
                else:
                    movements.void += amount

    def expect_reversed(self, times: int) -> None:
        """The card refund of a whole order succeeds and is reversed ``times`` times."""
        for tender in self.tenders:
            assert tender.kind == "card" and tender.payment_id is not None
            movements = self.record.movements(tender.payment_id)
            movements.refund += times * tender.amount
            movements.refund_reversal += times * tender.amount

    def expect_taken_back(self, *, items: list[Item] | None = None) -> None:
        """An undo that completes: what the acceptance paid back comes back to the store."""
        if items is not None:
            (tender,) = self.tenders
            self._take_back(tender, sum(i.quantity * i.unit_price for i in items))
            return
        for tender in self.tenders:
            self._take_back(tender, tender.amount)

    def _take_back(self, tender: Tender, amount: int) -> None:
        match tender.kind:
            case "points":
                self.record.points_delta -= amount
            case "credits":
                self.record.credits_delta -= amount
            case "card" if tender.behavior.get("recapture", "restorable") == "restorable":
                assert tender.payment_id is not None
                self.record.movements(tender.payment_id).recapture += amount

    def expect_restock(self, items: list[Item] | None = None, sign: int = 1) -> None:
        """Acceptance puts the items back in stock (an undo reserves them again: ``sign=-1``)."""
        for item in self.items if items is None else items:
            self.record.stock_deltas[item.sku] += sign * item.quantity

    # ------------------------------------------------------------------ plumbing

    def _order_path(self, suffix: str = "") -> str:
        return f"/v1/shops/{self._endpoints.shop_id}/orders/{self.record.order_id}{suffix}"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._endpoints.token}"}

    def _next_key(self, step: str) -> str:
        self._steps += 1
        self.record.asked.append(step)
        return f"{self.record.order_id}:{self._steps}:{step.replace(' ', '-')}"

    async def _send(
        self, method: str, path: str, body: dict[str, Any], key: str, *, step: str
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method,
                f"{self._endpoints.hook_url}{path}",
                json=body,
                headers=self._auth() | {"Idempotency-Key": key},
            )
        except DriverGaveUpError as err:
            raise self.problem(f"{step}: {err}") from None

    def _check(
        self,
        answer: httpx.Response,
        *,
        step: str,
        statuses: tuple[int, ...],
        error_code: str | None = None,
    ) -> dict[str, Any]:
        code = _error_code(answer)
        if answer.status_code not in statuses or (error_code is not None and code != error_code):
            raise self.problem(
                f"{step}: answered {answer.status_code} {code or ''} {_error_message(answer)}"
            )
        payload: dict[str, Any] = answer.json()
        return payload

    async def _expect(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        step: str,
        statuses: tuple[int, ...],
    ) -> dict[str, Any]:
        answer = await self._send(method, path, body, self._next_key(step), step=step)
        return self._check(answer, step=step, statuses=statuses)

    def problem(self, text: str) -> ScenarioAbortedError:
        """Write down that a step went wrong; raise what this returns to stop the shape."""
        self.record.problems.append(text)
        return ScenarioAbortedError(text)


# -- the shapes ----------------------------------------------------------------------------------

Shape = Callable[[OrderDriver], Awaitable[None]]


def _line(view: dict[str, Any], kind: str) -> dict[str, Any]:
    line: dict[str, Any] = next(r for r in view["refunds"] if r["tender_kind"] == kind)
    return line


async def _deposit_to_confirm(d: OrderDriver, cid: str) -> dict[str, Any]:
    """The view once a bank deposit awaits the merchant's confirmation."""
    return await d.until(
        cid,
        "a deposit to confirm",
        lambda v: any(r["status"] == "awaiting_confirmation" for r in v["refunds"]),
    )


async def _deposit_confirmed(d: OrderDriver, cid: str) -> None:
    """The merchant confirms the bank deposit (``TX-{order id}``); the cancellation ends."""
    refund_id = _line(await _deposit_to_confirm(d, cid), "bank_transfer")["refund_id"]
    await d.act(cid, f"refunds/{refund_id}/confirm", {"reference": f"TX-{d.record.order_id}"})
    await d.until_status(cid, "canceled")


def _failures(view: dict[str, Any]) -> int:
    return sum(1 for h in view["history"] if h["event"] == "refund_failed")


def _reversals(view: dict[str, Any]) -> int:
    """How many reversals of the card refund the run has learned: of a line it had decided
    (``refund_reversed``), or of a refund its own retried call found reversed already
    (``refund_failed``, "… failed after it was made", flagged ``refund_failed``)."""
    return sum(
        1
        for h in view["history"]
        if h["event"] == "refund_reversed"
        or (h["event"] == "refund_failed" and REVERSED_WHILE_CALLING in str(h["detail"]))
    )


REVERSED_WHILE_CALLING = "failed after it was made"
"""How ``activities/provider.py`` words a refund the provider reversed before the call that
made it returned (a retry found it so)."""


async def _customer_asks(d: OrderDriver, action: str, body: dict[str, Any] | None = None) -> None:
    """The order placed as its situation says; the customer asks from My Account, then
    ``action`` (the merchant accepts or rejects, the customer withdraws); the situation's end."""
    await d.begin()
    cid = await d.start(merchant=False)
    await d.act(cid, action, body)
    await d.until_status(cid, str(d.situation.ends))


async def _merchant_cancels(
    d: OrderDriver,
    *,
    accept: dict[str, Any] | None = None,
    channel: str | None = None,
    **card: Any,
) -> None:
    """The order placed as its situation says (``card``: more sandbox behavior); the merchant
    cancels it (the start carries the acceptance); the situation's end."""
    await d.begin(**card)
    cid = await d.start(merchant=True, accept=accept, channel=channel)
    await d.until_status(cid, str(d.situation.ends))


async def card_request_accepted(d: OrderDriver) -> None:
    """A customer asks from My Account; the merchant accepts; the captured card is refunded."""
    await _customer_asks(d, "accept", {"reason_code": "changed_mind", "reason": "asked nicely"})


async def card_authorized_voided(d: OrderDriver) -> None:
    """The merchant cancels an order whose card was only authorized: the provider voids it."""
    await _merchant_cancels(d)


async def card_refund_pending(d: OrderDriver) -> None:
    """The customer phoned; the refund is pending at the provider and settles seconds later."""
    settle = d.rng.choice([1.0, 2.0, 4.0])
    accept = {"reason_code": "customer_contact", "reason": "phoned"}
    await _merchant_cancels(d, accept=accept, channel="contact", settle_after_seconds=settle)


async def bank_transfer_confirmed(d: OrderDriver) -> None:
    """Paid by bank transfer: accepted with the customer's account, the merchant confirms."""
    await d.begin()
    cid = await d.start(merchant=False)
    accept = {"reason_code": "changed_mind", "bank_account": BANK_ACCOUNT}
    await d.act(cid, "accept", accept)
    await _deposit_confirmed(d, cid)


async def points_and_credits(d: OrderDriver) -> None:
    """Paid with points and credits only: canceled at once, both balances returned."""
    await _merchant_cancels(d)


async def mixed_tenders(d: OrderDriver) -> None:
    """Card, points and credits: each goes back to its source."""
    await _customer_asks(d, "accept", {"reason_code": "shipping_delay"})


async def declined_then_credits(d: OrderDriver) -> None:
    """The card network declines: retried as it is (declined again), then paid as credits."""
    await d.begin()
    cid = await d.start(merchant=True)
    view = await d.until(cid, "a failed refund", lambda v: _failures(v) >= 1)
    refund_id = _line(view, "card")["refund_id"]
    await d.act(cid, f"refunds/{refund_id}/retry", {})
    await d.until(cid, "a second failed refund", lambda v: _failures(v) >= 2)
    await d.act(cid, f"refunds/{refund_id}/retry", {"method": "credits"})
    await d.until_status(cid, "canceled")


async def card_refund_reversed(d: OrderDriver) -> None:
    """The card refund succeeds, the order is canceled, then the provider reverses the refund
    (the card was closed): the cancellation reopens needing attention (``refund_reversed``).
    The merchant retries it as is (or not), which is reversed again, then switches it to
    credits: one effective payback, never two."""
    # The delay is drawn once the basket is (a seed repeats the amounts of every shape).
    await d.begin(
        lambda total: d.paid_as_situation(total, fail_after_seconds=d.rng.choice([1.0, 2.0, 3.0]))
    )
    retries = d.rng.choice(REVERSAL_RETRIES)
    d.expect_reversed(times=1 + retries)
    cid = await d.start(merchant=True)
    for reversals in range(1, retries + 2):

        def reopened(view: dict[str, Any], n: int = reversals) -> bool:
            return (
                _reversals(view) >= n
                and view["status"] == "in_progress"
                and view["needs_attention"] in ("refund_reversed", "refund_failed")
            )

        view = await d.until(cid, f"refund reversal {reversals}", reopened)
        refund_id = _line(view, "card")["refund_id"]
        if reversals <= retries:
            await d.act(cid, f"refunds/{refund_id}/retry", {})
    await d.act(cid, f"refunds/{refund_id}/retry", {"method": "credits"})
    await d.until_status(cid, "canceled")


async def card_as_credits(d: OrderDriver) -> None:
    """The merchant refunds a card order as store credit."""
    await _customer_asks(d, "accept", {"reason_code": "changed_mind", "refund_method": "credits"})


async def defective_not_restocked(d: OrderDriver) -> None:
    """Defective goods: canceled and refunded, nothing goes back in stock."""
    await _merchant_cancels(
        d, accept={"reason_code": "defective", "reason": "broken", "restock": False}
    )


async def rejected(d: OrderDriver) -> None:
    """The merchant rejects the customer's request: nothing moves, the order is as it was."""
    await _customer_asks(d, "reject", {"reason": "already packed", "customer_note": "sorry"})


async def withdrawn(d: OrderDriver) -> None:
    """The customer takes the request back."""
    await _customer_asks(d, "withdraw")


async def canceled_then_undone(d: OrderDriver) -> None:
    """Canceled and paid back, then undone: what was paid back is taken back. As the
    situation pays: a captured card's refund is recaptured (``undo_recaptured``), a voided
    authorization authorized again (``undo_void_recaptured``), points and credits taken back
    from the balances (``undo_points_taken_back``)."""
    await d.begin()
    d.expect_taken_back()
    cid = await d.start(merchant=True)
    await d.until_status(cid, "canceled")
    await d.act(cid, "undo", {"reason": "found another one"})
    await d.until_status(cid, "undone")


async def _undo_repaid(d: OrderDriver, cid: str, reason: str, *, paid: str, reference: str) -> None:
    """Undo asking the customer to pay the order's total again, then record that repayment
    (referenced ``{reference}-{order id}``) and wait for the undo to finish."""
    view = await d.act(cid, "undo", {"reason": reason, "require_repayment": True})
    due = (view.get("repayment_due") or {}).get("amount")
    if due != d.total():
        raise d.problem(f"undo asks for a repayment of {due}, {paid} {d.total()}")
    await d.act(cid, "repayment", {"reference": f"{reference}-{d.record.order_id}", "amount": due})
    await d.until_status(cid, "undone")


async def undo_with_repayment(d: OrderDriver) -> None:
    """No recapture possible: the undo is refused, then done with the customer paying again."""
    await d.begin(recapture=d.rng.choice(["not_possible", "reauth_required"]))
    d.expect_taken_back()  # the card's refund stays: the customer pays again instead
    cid = await d.start(merchant=True)
    await d.until_status(cid, "canceled")
    await d.act(
        cid,
        "undo",
        {"reason": "customer wants it after all"},
        statuses=(409,),
        error_code=d.situation.refused,
    )
    await _undo_repaid(d, cid, "customer pays again", paid="the card paid", reference="PAY")


async def undo_bank_repaid(d: OrderDriver) -> None:
    """A confirmed bank deposit can't be taken back: undoing waits for the customer to pay."""
    await d.begin()
    accept = {"reason_code": "sold_out", "bank_account": BANK_ACCOUNT}
    cid = await d.start(merchant=True, accept=accept)
    await _deposit_confirmed(d, cid)
    await _undo_repaid(d, cid, "back in stock", paid="the deposit was", reference="DEP")


async def undo_while_in_progress(d: OrderDriver) -> None:
    """Undone before the bank deposit was made: the deposit is canceled, nothing is owed."""
    await d.begin()
    cid = await d.start(merchant=False)
    await d.act(cid, "accept", {"reason_code": "changed_mind", "bank_account": BANK_ACCOUNT})
    await _deposit_to_confirm(d, cid)
    await d.act(cid, "undo", {"reason": "customer changed their mind again"})
    await d.until_status(cid, "undone")


async def partial_then_rest(d: OrderDriver) -> None:
    """One unit canceled first, the rest (with the shipping fee) later: two refunds."""
    await d.begin()  # both parts together pay back and restock the whole order
    first_item = d.items[0]
    cid = await d.start(merchant=True, items=[{"item_id": first_item.item_id, "quantity": 1}])
    await d.until_status(cid, "canceled")
    rest = await d.start(merchant=True)
    await d.until_status(rest, "canceled")


async def partial_undone(d: OrderDriver) -> None:
    """One unit canceled, then the partial cancellation undone."""
    await d.place()
    first_item = d.items[0]
    part = [Item(first_item.item_id, first_item.sku, 1, first_item.unit_price)]
    d.expect_end()
    d.expect_paid_back(items=part)
    d.expect_taken_back(items=part)
    cid = await d.start(merchant=True, items=[{"item_id": first_item.item_id, "quantity": 1}])
    await d.until_status(cid, "canceled")
    await d.act(cid, "undo", {"reason": "customer keeps it"})
    await d.until_status(cid, "undone")


async def bulk_sold_out(d: OrderDriver) -> None:
    """A SKU sells out: a bulk job cancels the order's line of it, refunding that line."""
    sku = f"bulk-{d.record.order_id}"
    await d.place(first_sku=sku)
    d.expect_end()
    d.expect_paid_back(items=[d.items[0]])
    cid = await d.bulk_cancel(sku)
    await d.until_status(cid, "canceled")


SHAPES: dict[str, Shape] = {  # keyed by the catalog's situations (tools.situations)
    "card_request_accepted": card_request_accepted,
    "card_authorized_voided": card_authorized_voided,
    "card_refund_pending": card_refund_pending,
    "bank_transfer_confirmed": bank_transfer_confirmed,
    "points_and_credits": points_and_credits,
    "mixed_tenders": mixed_tenders,
    "declined_then_credits": declined_then_credits,
    "card_refund_reversed": card_refund_reversed,
    "card_as_credits": card_as_credits,
    "defective_not_restocked": defective_not_restocked,
    "rejected": rejected,
    "withdrawn": withdrawn,
    "undo_recaptured": canceled_then_undone,
    "undo_void_recaptured": canceled_then_undone,
    "undo_with_repayment": undo_with_repayment,
    "undo_bank_repaid": undo_bank_repaid,
    "undo_points_taken_back": canceled_then_undone,
    "undo_while_in_progress": undo_while_in_progress,
    "partial_then_rest": partial_then_rest,
    "partial_undone": partial_undone,
    "bulk_sold_out": bulk_sold_out,
}
"""Every shape a chaos run mixes; each appears once before any appears twice."""


# -- the whole drive -----------------------------------------------------------------------------


class Driver:
    """Sets up the shop, then starts orders of every shape at a steady rate."""

    def __init__(self, endpoints: Endpoints, record: ChaosRecord, rng: random.Random) -> None:
        self.endpoints = endpoints
        self.record = record
        self.rng = rng
        self.http = ResilientHttp(httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, trust_env=False))
        self.tasks: list[asyncio.Task[None]] = []

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.http.http.aclose()

    async def set_up_shop(self) -> None:
        """Stock for every SKU and starting balances for every customer."""
        auth = {"Authorization": f"Bearer {self.endpoints.token}"}
        base = f"{self.endpoints.hook_url}/v1/shops/{self.endpoints.shop_id}"
        for sku in SKUS:
            self.record.initial_stock[sku] = INITIAL_STOCK
            await self._put(f"{base}/stock/{sku}", {"available": INITIAL_STOCK}, auth)
        for customer in CUSTOMERS:
            points, credits = self.rng.randrange(0, 50_000), self.rng.randrange(0, 50_000)
            self.record.initial_balances[customer] = (points, credits)
            await self._put(
                f"{base}/customers/{customer}", {"points": points, "credits": credits}, auth
            )

    async def _put(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        answer = await self.http.request("PUT", url, json=body, headers=headers)
        answer.raise_for_status()

    async def drive(self, count: int, rate: float) -> None:
        """Start ``count`` orders, ``rate`` per second; return once the last one started."""
        names = list(SHAPES)
        self.rng.shuffle(names)
        began = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            shape = names[n % len(names)]
            record = OrderRecord(
                order_id=f"o{n:04d}", shape=shape, customer_id=self.rng.choice(CUSTOMERS)
            )
            self.record.orders.append(record)
            driver = OrderDriver(
                self.endpoints, self.http, record, random.Random(self.rng.random())
            )
            self.tasks.append(asyncio.create_task(self._run(driver, SHAPES[shape])))

    @staticmethod
    async def _run(driver: OrderDriver, shape: Shape) -> None:
        try:
            await shape(driver)
        except ScenarioAbortedError:
            return  # already written down as a problem
        except Exception as err:  # a bug of the driver's: it must show, not vanish in a task
            driver.record.problems.append(f"the driver failed: {err!r}")
            return
        driver.record.settled = True

    async def settle(self, within: float) -> int:
        """Wait up to ``within`` seconds for every order to finish; return how many did not."""
        if not self.tasks:
            return 0
        _, pending = await asyncio.wait(self.tasks, timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for record in self.record.orders:
            if not record.settled and not record.problems:
                record.problems.append(f"did not finish its steps within {within:.0f} s")
        return len(pending)
