"""Reconcile after a chaos run: from first principles, is every cancellation right, and the money?

Three sources are compared, none trusted over another:

- **what the driver asked** (:class:`ChaosRecord`): for every order, the tenders it placed,
  every action it sent, and what those actions imply, worked out by the driver itself from
  the order's items and tenders: each cancellation's final status, the order's status, the
  card movements per payment, and the stock and balance changes;
- **the store database**: cancellations, refund lines, the audit trail, stock and balances;
- **the provider sandbox's ledger** (``GET /v1/payments/{id}``), whose every refund, void,
  recapture and refund reversal carries the idempotency key the workflow sent
  (``{refund_id}/try-{n}``, ``{refund_id}/undo-{n}/recapture``, ``{refund_id}/undo-{n}/reverse``),
  and its refunds (``GET /v1/payments/{id}/refunds``), whose metadata names the refund line;

plus Temporal's own view of each run (its status and search attributes).

Each disagreement is one :class:`Violation`. :func:`reconcile` only reads: it can run again
after someone planted a fault (a test does), and it finds it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from workflows import search_attributes

# -- what the driver asked -----------------------------------------------------------------------


@dataclass
class Movements:
    """Card movements of one payment, in minor units."""

    refund: int = 0
    void: int = 0
    recapture: int = 0
    refund_reversal: int = 0
    """Refunds that succeeded and then failed: their money came back to the merchant."""

    def add(self, other: Movements) -> None:
        """Add ``other`` to these."""
        self.refund += other.refund
        self.void += other.void
        self.recapture += other.recapture
        self.refund_reversal += other.refund_reversal

    def net(self) -> tuple[int, int, int]:
        """(refunds net of reversals, voids, recaptures): what moved in the end."""
        return (self.refund - self.refund_reversal, self.void, self.recapture)

    def as_dict(self) -> dict[str, int]:
        """``{"refund", "void", "recapture", "refund_reversal"}``."""
        return {
            "refund": self.refund,
            "void": self.void,
            "recapture": self.recapture,
            "refund_reversal": self.refund_reversal,
        }


@dataclass
class OrderRecord:
    """One order the driver placed, what it asked, and what that must lead to."""

    order_id: str
    shape: str
    customer_id: str
    payments: list[str] = field(default_factory=list)
    """The card payments of the order's tenders, as the driver created them."""
    asked: list[str] = field(default_factory=list)
    """The actions sent, in order (for the report)."""
    expected_statuses: list[str] = field(default_factory=list)
    """The final status of each cancellation of the order, oldest first."""
    expected_order_status: str | None = None
    expected_movements: dict[str, Movements] = field(default_factory=dict)
    """Per payment: refunds, voids and recaptures the provider must have made."""
    stock_deltas: Counter[str] = field(default_factory=Counter)
    points_delta: int = 0
    credits_delta: int = 0
    problems: list[str] = field(default_factory=list)
    """Actions that were refused or never answered although they should have worked."""
    settled: bool = False
    """The driver saw every cancellation reach its final status."""

    def movements(self, payment_id: str) -> Movements:
        """The expected movements of ``payment_id`` (added on first use)."""
        return self.expected_movements.setdefault(payment_id, Movements())


@dataclass
class ChaosRecord:
    """Everything the driver did: the shop, its starting stock and balances, the orders."""

    shop_id: str
    initial_stock: dict[str, int] = field(default_factory=dict)
    initial_balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per customer: (points, credits) before the run."""
    orders: list[OrderRecord] = field(default_factory=list)


# -- what the reconciler finds ------------------------------------------------------------------


class ViolationKind(StrEnum):
    """The invariants a chaos run must keep."""

    WRONG_FINAL_STATE = "wrong_final_state"
    """A cancellation (or the order) did not end as what was asked implies."""
    ACTION_FAILED = "action_failed"
    """An action that should have worked was refused, or never answered."""
    STUCK_RUN = "stuck_run"
    """An open run not waiting for anybody, without a needs-attention mark."""
    PROJECTION_MISMATCH = "projection_mismatch"
    """The database and the workflow disagree about a cancellation's status."""
    DUPLICATE_TRANSITION = "duplicate_transition"
    """A transition (accepted, canceled, undone, …) is in the audit trail twice."""
    INCOMPLETE_REFUND = "incomplete_refund"
    """Canceled, but the succeeded refund lines don't add up to the refundable amount."""
    LOST_REFUND = "lost_refund"
    """The database says a provider refund or void succeeded; the ledger has no such movement."""
    UNRECORDED_MOVEMENT = "unrecorded_movement"
    """The ledger paid a line back that the database does not show as paid by the provider."""
    UNMATCHED_MOVEMENT = "unmatched_movement"
    """A ledger refund, void or recapture whose idempotency key names no refund line."""
    DOUBLE_EXECUTION = "double_execution"
    """A refund, void or recapture executed twice for one line (or one key used twice)."""
    RECAPTURE_MISMATCH = "recapture_mismatch"
    """What was recaptured differs from what the undo (or its rollback) implies."""
    EXPECTATION_MISMATCH = "expectation_mismatch"
    """A payment's movements differ from what the driver's actions imply."""
    UNRESOLVED_REVERSAL = "unresolved_reversal"
    """A refund failed after success, and its line is neither paid back again nor flagged."""
    WEBHOOK_ACCEPTED = "webhook_accepted"
    """The hook took a webhook delivery it must refuse (stale timestamp, wrong signature)."""
    PENDING_AT_PROVIDER = "pending_at_provider"
    """A refund is still pending at the provider after the run settled."""
    STOCK_MISMATCH = "stock_mismatch"
    BALANCE_MISMATCH = "balance_mismatch"
    EVENT_NOT_DELIVERED = "event_not_delivered"
    """An event the store recorded never reached the shop's webhook receiver."""
    EVENT_OUT_OF_ORDER = "event_out_of_order"
    """A cancellation's events first reached the receiver out of sequence."""
    DELIVERY_FAILED = "delivery_failed"
    """A webhook delivery gave up although the receiver was up all along."""


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which kind, about what, and the numbers."""

    kind: ViolationKind
    subject: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"kind": self.kind.value, "subject": self.subject, "detail": self.detail}


@dataclass
class Reconciliation:
    """The reconciler's findings and what it looked at."""

    violations: list[Violation] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    """How many cancellations, payments, ledger movements, … were checked."""
    final_statuses: Counter[str] = field(default_factory=Counter)
    cancellation_ids: list[str] = field(default_factory=list)
    """Every cancellation of the shop (the workflow ids)."""

    def add(self, kind: ViolationKind, subject: str, detail: str) -> None:
        """Record a violation."""
        self.violations.append(Violation(kind, subject, detail))

    def by_kind(self) -> Counter[str]:
        """How many violations of each kind."""
        return Counter(v.kind.value for v in self.violations)


# -- the sources ---------------------------------------------------------------------------------

OPEN_STATUSES = frozenset({"requested", "in_progress", "undoing", "awaiting_repayment"})
"""Statuses in which a run waits for something; settled runs are never left in one unmarked."""
ONCE_PER_CANCELLATION = frozenset(
    {"accepted", "canceled", "rejected", "withdrawn", "undone", "acceptance_refused"}
)
"""Audit events a cancellation records at most once (``canceled`` once more per reversal)."""

_PAYBACK_KEY = re.compile(r"^(?P<refund_id>.+)/try-(?P<n>\d+)$")
_UNDO_KEY = re.compile(r"^(?P<refund_id>.+)/undo-(?P<n>\d+)/(?P<step>recapture|reverse)$")


# Ledger reads run a few at a time: the sandbox is one SQLite file.
_SANDBOX_CONCURRENCY = 8
_TEMPORAL_CONCURRENCY = 16


@dataclass(frozen=True)
class World:
    """Where the reconciler reads: the store database, the sandbox and Temporal."""

    database_url: str
    sandbox_url: str
    temporal: Client | None = None
    """None skips the workflows' own view (status and search attributes)."""


@dataclass(frozen=True)
class _Line:
    refund_id: str
    cancellation_id: str
    order_id: str
    tender_id: str
    channel: str
    status: str
    amount: int
    provider_reference: str | None


@dataclass(frozen=True)
class _Cancellation:
    cancellation_id: str
    order_id: str
    seq: int
    status: str
    needs_attention: str | None
    refundable: int | None
    refunded: int


@dataclass(frozen=True)
class _Entry:
    type: str
    amount: int
    key: str | None


@dataclass
class _Store:
    """The store database, as read once."""

    orders: dict[str, str]
    tenders: dict[tuple[str, str], tuple[str, int, str | None]]
    """(order, tender) → (kind, amount, payment_id)."""
    cancellations: list[_Cancellation]
    lines: list[_Line]
    events: dict[str, list[tuple[str, dict[str, Any]]]]
    stock: dict[str, int]
    stock_moved: dict[str, int]
    balances: dict[str, tuple[int, int]]
    balances_moved: dict[str, tuple[int, int]]


_Row = TypeVar("_Row", _Line, _Cancellation)


def _from_row(cls: type[_Row], row: asyncpg.Record, **read: Any) -> _Row:
    """``cls`` with each field the same-named column of ``row``, but for those given in
    ``read``."""
    names = (f.name for f in fields(cls) if f.name not in read)
    return cls(**{name: row[name] for name in names}, **read)


async def _read_store(database_url: str, shop_id: str) -> _Store:
    conn = await asyncpg.connect(database_url)
    try:
        orders = {
            r["order_id"]: r["status"]
            for r in await conn.fetch(
                "SELECT order_id, status FROM orders WHERE shop_id=$1", shop_id
            )
        }
        tenders = {
            (r["order_id"], r["tender_id"]): (r["kind"], int(r["amount"]), r["payment_id"])
            for r in await conn.fetch(
                "SELECT order_id, tender_id, kind, amount, payment_id FROM tenders"
                " WHERE shop_id=$1",
                shop_id,
            )
        }
        cancellations = [
            _from_row(
                _Cancellation,
                r,
                refundable=None if r["refundable"] is None else int(r["refundable"]),
                refunded=int(r["refunded"]),
            )
            for r in await conn.fetch(
                "SELECT cancellation_id, order_id, seq, status, needs_attention, refundable,"
                " refunded FROM cancellations WHERE shop_id=$1 ORDER BY order_id, seq",
                shop_id,
            )
        ]
        lines = [
            _from_row(_Line, r, amount=int(r["amount"]))
            for r in await conn.fetch(
                "SELECT r.refund_id, r.cancellation_id, c.order_id, r.tender_id, r.channel,"
                " r.status, r.amount, r.provider_reference FROM refund_lines r"
                " JOIN cancellations c USING (cancellation_id) WHERE c.shop_id=$1",
                shop_id,
            )
        ]
        events: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for r in await conn.fetch(
            "SELECT cancellation_id, event, detail FROM cancellation_events WHERE shop_id=$1"
            " ORDER BY at, event_key",
            shop_id,
        ):
            events[r["cancellation_id"]].append((r["event"], json.loads(r["detail"])))
        stock = {
            r["sku"]: int(r["available"])
            for r in await conn.fetch("SELECT sku, available FROM stock WHERE shop_id=$1", shop_id)
        }
        stock_moved = {
            r["sku"]: int(r["delta"])
            for r in await conn.fetch(
                "SELECT sku, sum(delta) AS delta FROM stock_movements WHERE shop_id=$1"
                " GROUP BY sku",
                shop_id,
            )
        }
        balances = {
            r["customer_id"]: (int(r["points"]), int(r["credits"]))
            for r in await conn.fetch(
                "SELECT customer_id, points, credits FROM customers WHERE shop_id=$1", shop_id
            )
        }
        moved: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in await conn.fetch(
            "SELECT customer_id, balance, sum(delta) AS delta FROM balance_movements"
            " WHERE shop_id=$1 GROUP BY customer_id, balance",
            shop_id,
        ):
            moved[r["customer_id"]][0 if r["balance"] == "points" else 1] += int(r["delta"])
        return _Store(
            orders=orders,
            tenders=tenders,
            cancellations=cancellations,
            lines=lines,
            events=dict(events),
            stock=stock,
            stock_moved=stock_moved,
            balances=balances,
            balances_moved={c: (p, k) for c, (p, k) in moved.items()},
        )
    finally:
        await conn.close()


async def _read_payments(sandbox_url: str, payment_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    limit = asyncio.Semaphore(_SANDBOX_CONCURRENCY)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30.0, trust_env=False) as http:

        async def one(payment_id: str) -> tuple[str, dict[str, Any]]:
            async with limit:
                answer = await http.get(f"/v1/payments/{payment_id}")
                answer.raise_for_status()
                payload: dict[str, Any] = answer.json()
                return payment_id, payload

        return dict(await asyncio.gather(*(one(p) for p in sorted(set(payment_ids)))))


async def _read_refunds(
    sandbox_url: str, payment_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every provider refund of each payment, with its status and metadata."""
    limit = asyncio.Semaphore(_SANDBOX_CONCURRENCY)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30.0, trust_env=False) as http:

        async def one(payment_id: str) -> tuple[str, list[dict[str, Any]]]:
            async with limit:
                answer = await http.get(f"/v1/payments/{payment_id}/refunds")
                answer.raise_for_status()
                listed: list[dict[str, Any]] = answer.json()["data"]
                return payment_id, listed

        return dict(await asyncio.gather(*(one(p) for p in sorted(set(payment_ids)))))


@dataclass(frozen=True)
class _RunView:
    status: WorkflowExecutionStatus | None
    cancellation_status: str | None
    needs_attention: str | None


async def _read_runs(client: Client, cancellation_ids: Iterable[str]) -> dict[str, _RunView]:
    limit = asyncio.Semaphore(_TEMPORAL_CONCURRENCY)

    async def one(cancellation_id: str) -> tuple[str, _RunView]:
        async with limit:
            try:
                described = await client.get_workflow_handle(cancellation_id).describe()
            except RPCError:
                return cancellation_id, _RunView(None, None, None)
            attributes = described.typed_search_attributes
            return cancellation_id, _RunView(
                described.status,
                attributes.get(search_attributes.CANCELLATION_STATUS),
                attributes.get(search_attributes.NEEDS_ATTENTION),
            )

    return dict(await asyncio.gather(*(one(c) for c in cancellation_ids)))


# -- the checks ----------------------------------------------------------------------------------


async def reconcile(record: ChaosRecord, world: World) -> Reconciliation:
    """Compare what was asked, the database, the ledger and the workflows; list what differs."""
    result = Reconciliation()
    store = await _read_store(world.database_url, record.shop_id)
    result.cancellation_ids = [c.cancellation_id for c in store.cancellations]
    card_payments = {
        payment: (order_id, tender_id)
        for (order_id, tender_id), (kind, _, payment) in store.tenders.items()
        if kind == "card" and payment is not None
    }
    asked_payments = {p for order in record.orders for p in order.payments}
    payments = await _read_payments(world.sandbox_url, set(card_payments) | asked_payments)
    runs = (
        await _read_runs(world.temporal, [c.cancellation_id for c in store.cancellations])
        if world.temporal is not None
        else {}
    )
    _check_orders(record, store, result)
    _check_cancellations(store, runs, result)
    refunds = await _read_refunds(world.sandbox_url, payments)
    _check_payments(record, store, card_payments, payments, refunds, result)
    _check_stock_and_balances(record, store, result)
    return result


def _check_orders(record: ChaosRecord, store: _Store, result: Reconciliation) -> None:
    by_order: dict[str, list[_Cancellation]] = defaultdict(list)
    for cancellation in store.cancellations:
        by_order[cancellation.order_id].append(cancellation)
    for order in record.orders:
        result.checked["orders"] += 1
        subject = f"{order.order_id} ({order.shape})"
        for problem in order.problems:
            result.add(ViolationKind.ACTION_FAILED, subject, problem)
        statuses = [c.status for c in sorted(by_order.get(order.order_id, []), key=_seq)]
        result.final_statuses.update(statuses)
        if statuses != order.expected_statuses:
            result.add(
                ViolationKind.WRONG_FINAL_STATE,
                subject,
                f"cancellations ended {statuses}, expected {order.expected_statuses}",
            )
        actual = store.orders.get(order.order_id)
        if order.expected_order_status is not None and actual != order.expected_order_status:
            result.add(
                ViolationKind.WRONG_FINAL_STATE,
                subject,
                f"order is {actual}, expected {order.expected_order_status}",
            )


def _check_cancellations(
    store: _Store, runs: Mapping[str, _RunView], result: Reconciliation
) -> None:
    lines_of: dict[str, list[_Line]] = defaultdict(list)
    for line in store.lines:
        lines_of[line.cancellation_id].append(line)
    for cancellation in store.cancellations:
        result.checked["cancellations"] += 1
        cid = cancellation.cancellation_id
        run = runs.get(cid)
        if run is not None:
            if run.status is None:
                result.add(ViolationKind.PROJECTION_MISMATCH, cid, "Temporal has no such run")
            elif run.status not in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.COMPLETED,
            ):
                result.add(ViolationKind.WRONG_FINAL_STATE, cid, f"the run {run.status.name}")
            elif run.cancellation_status != cancellation.status:
                result.add(
                    ViolationKind.PROJECTION_MISMATCH,
                    cid,
                    f"database says {cancellation.status}, the workflow's search attribute"
                    f" {run.cancellation_status}",
                )
        if cancellation.status in OPEN_STATUSES and not cancellation.needs_attention:
            result.add(
                ViolationKind.STUCK_RUN,
                cid,
                f"still {cancellation.status} after the run settled, and nobody was told",
            )
        counts = Counter(event for event, _ in store.events.get(cid, []))
        for event in sorted(ONCE_PER_CANCELLATION):
            # A refund the provider reversed reopens a canceled cancellation: it is canceled
            # again once the merchant re-pays the line.
            allowed = 1 + (counts["refund_reversed"] if event == "canceled" else 0)
            if counts[event] > allowed:
                result.add(
                    ViolationKind.DUPLICATE_TRANSITION, cid, f"{event} recorded {counts[event]}x"
                )
        if cancellation.status == "canceled":
            succeeded = sum(
                line.amount for line in lines_of.get(cid, []) if line.status == "succeeded"
            )
            if cancellation.refundable is None or succeeded != cancellation.refundable:
                result.add(
                    ViolationKind.INCOMPLETE_REFUND,
                    cid,
                    f"canceled with {succeeded} refunded by its lines of"
                    f" {cancellation.refundable} refundable",
                )


def _check_payments(
    record: ChaosRecord,
    store: _Store,
    card_payments: Mapping[str, tuple[str, str]],
    payments: Mapping[str, dict[str, Any]],
    refunds: Mapping[str, list[dict[str, Any]]],
    result: Reconciliation,
) -> None:
    cancellations = {c.cancellation_id: c for c in store.cancellations}
    lines_by_payment: dict[str, list[_Line]] = defaultdict(list)
    for line in store.lines:
        tender = store.tenders.get((line.order_id, line.tender_id))
        if tender is not None and tender[2] is not None:
            lines_by_payment[tender[2]].append(line)
    expected: dict[str, Movements] = defaultdict(Movements)
    for order in record.orders:
        for payment_id, movements in order.expected_movements.items():
            expected[payment_id].add(movements)
        for payment_id in order.payments:
            if payment_id not in card_payments:
                result.add(
                    ViolationKind.WRONG_FINAL_STATE,
                    order.order_id,
                    f"payment {payment_id} is on none of the order's tenders",
                )
    for payment_id, payment in sorted(payments.items()):
        result.checked["payments"] += 1
        entries = [
            _Entry(e["type"], int(e["amount"]), e.get("idempotency_key"))
            for e in payment["ledger"]
            if e["type"] in ("refund", "void", "recapture", "refund_reversal")
        ]
        result.checked["ledger movements"] += len(entries)
        lines = lines_by_payment.get(payment_id, [])
        _check_ledger(payment_id, entries, lines, cancellations, store.events, result)
        reverses = Counter(
            m["refund_id"]
            for e in entries
            if (m := _UNDO_KEY.match(e.key or "")) and m["step"] == "reverse"
        )
        _check_provider_refunds(payment_id, refunds.get(payment_id, []), lines, reverses, result)
        totals = Movements()
        for entry in entries:
            totals.add(Movements(**{entry.type: entry.amount}))
        want = expected.get(payment_id, Movements())
        # Net refunds: after a key expired, a retry of a try whose refund the provider had
        # reversed makes a new one (nothing of the first was in effect), which the provider
        # may reverse again; how many such pairs there are depends on the faults' timing.
        if totals.net() != want.net():
            result.add(
                ViolationKind.EXPECTATION_MISMATCH,
                payment_id,
                f"ledger moved {totals.as_dict()}, the actions asked imply {want.as_dict()}",
            )
        pending = int(payment.get("pending_refund_amount") or 0)
        if pending:
            result.add(ViolationKind.PENDING_AT_PROVIDER, payment_id, f"{pending} still pending")


def _check_ledger(
    payment_id: str,
    entries: list[_Entry],
    lines: list[_Line],
    cancellations: Mapping[str, _Cancellation],
    events: Mapping[str, list[tuple[str, dict[str, Any]]]],
    result: Reconciliation,
) -> None:
    """Match every movement to its refund line by key, and every line to its movements."""
    # A key the provider forgot (24 h) can move money again; that is a double payment unless
    # the provider reversed all but one of the refunds it made.
    by_key = Counter(e.key for e in entries if e.key is not None and e.type != "refund_reversal")
    by_key.subtract(e.key for e in entries if e.key is not None and e.type == "refund_reversal")
    for key, count in by_key.items():
        if count > 1:
            result.add(
                ViolationKind.DOUBLE_EXECUTION,
                payment_id,
                f"key {key} moved money {count}x (net of reversals)",
            )
    known = {line.refund_id: line for line in lines}
    paid_back: dict[str, list[_Entry]] = defaultdict(list)
    reversed_: dict[str, list[_Entry]] = defaultdict(list)
    undo_steps: dict[tuple[str, str, str], list[_Entry]] = defaultdict(list)
    for entry in entries:
        payback = _PAYBACK_KEY.match(entry.key or "")
        undo = _UNDO_KEY.match(entry.key or "")
        if payback and payback["refund_id"] in known and entry.type in ("refund", "void"):
            paid_back[payback["refund_id"]].append(entry)
        elif payback and payback["refund_id"] in known and entry.type == "refund_reversal":
            reversed_[payback["refund_id"]].append(entry)
        elif undo and undo["refund_id"] in known:
            step_type = "recapture" if undo["step"] == "recapture" else "refund"
            if entry.type != step_type:
                result.add(
                    ViolationKind.UNMATCHED_MOVEMENT,
                    payment_id,
                    f"{entry.type} of {entry.amount} under the {undo['step']} key {entry.key}",
                )
            undo_steps[(undo["refund_id"], undo["n"], undo["step"])].append(entry)
        else:
            result.add(
                ViolationKind.UNMATCHED_MOVEMENT,
                payment_id,
                f"{entry.type} of {entry.amount} with key {entry.key!r} belongs to no refund line",
            )
    net_recaptured: Counter[str] = Counter()
    for (refund_id, n, step), moved in undo_steps.items():
        net_recaptured[refund_id] += sum(m.amount for m in moved) * (
            1 if step == "recapture" else -1
        )
        if len(moved) > 1:
            result.add(
                ViolationKind.DOUBLE_EXECUTION,
                f"{refund_id} ({payment_id})",
                f"undo attempt {n}: {step} executed {len(moved)}x",
            )
    for line in lines:
        result.checked["refund lines (card)"] += 1
        subject = f"{line.refund_id} ({payment_id})"
        movements = paid_back.get(line.refund_id, [])
        reversals = reversed_.get(line.refund_id, [])
        # A refund the provider reversed (failed after success) paid nothing in the end:
        # at most one payback per line may still be in effect.
        if len(movements) - len(reversals) > 1:
            result.add(
                ViolationKind.DOUBLE_EXECUTION,
                subject,
                "paid back more than once: "
                + ", ".join(f"{m.type} {m.amount} ({m.key})" for m in movements + reversals),
            )
        paid = sum(m.amount for m in movements) - sum(m.amount for m in reversals)
        by_provider = line.channel == "provider" and line.status == "succeeded"
        want = line.amount if by_provider else 0
        if reversals:
            result.checked["reversed refund lines"] += 1
            _check_reversed_line(line, cancellations.get(line.cancellation_id), subject, result)
        if paid < want:
            result.add(
                ViolationKind.LOST_REFUND,
                subject,
                f"database: {line.channel} {line.status} {line.amount}"
                f" ({line.provider_reference}); ledger paid back {paid}",
            )
        elif paid > want:
            result.add(
                ViolationKind.UNRECORDED_MOVEMENT,
                subject,
                f"ledger paid back {paid} ("
                + ", ".join(f"{m.type} {m.amount}" for m in movements)
                + f"); database: {line.channel} {line.status} {line.amount}",
            )
        recaptured = net_recaptured[line.refund_id]
        cancellation = cancellations.get(line.cancellation_id)
        status = cancellation.status if cancellation else "?"
        should = (
            line.amount
            if by_provider
            and status in ("undone", "awaiting_repayment")
            and _recapture_outcome(events.get(line.cancellation_id, []), payment_id) == "restorable"
            else 0
        )
        if recaptured != should:
            result.add(
                ViolationKind.RECAPTURE_MISMATCH,
                subject,
                f"net recaptured {recaptured}, the cancellation ({status}) implies {should}",
            )


def _check_reversed_line(
    line: _Line, cancellation: _Cancellation | None, subject: str, result: Reconciliation
) -> None:
    """A line whose refund failed after success ended re-paid (by the provider once, or by
    credits or a bank deposit) or flagged for a person; the money checks above count it."""
    repaid = line.status == "succeeded"
    flagged = (
        cancellation is not None
        and cancellation.needs_attention == "refund_reversed"
        and line.status == "failed"
    )
    if not (repaid or flagged):
        status = cancellation.status if cancellation else "?"
        attention = cancellation.needs_attention if cancellation else None
        result.add(
            ViolationKind.UNRESOLVED_REVERSAL,
            subject,
            f"refund reversed by the provider; line {line.channel} {line.status}, cancellation"
            f" {status} needing attention {attention}",
        )


def _check_provider_refunds(
    payment_id: str,
    refunds: list[dict[str, Any]],
    lines: list[_Line],
    reverses: Counter[str],
    result: Reconciliation,
) -> None:
    """Per refund id (the provider refund's metadata), at most one refund still in effect
    (succeeded or pending), and every refund names a refund line of its payment.

    A rolled-back undo refunds its recapture again under the line's refund id (key
    ``…/undo-{n}/reverse``): each such ledger refund allows one more."""
    known = {line.refund_id for line in lines}
    effective: dict[str, list[str]] = defaultdict(list)
    for refund in refunds:
        result.checked["provider refunds"] += 1
        refund_id = (refund.get("metadata") or {}).get("refund_id")
        if refund_id not in known:
            result.add(
                ViolationKind.UNMATCHED_MOVEMENT,
                payment_id,
                f"provider refund {refund['id']} ({refund['status']}, {refund['amount']}) names"
                f" refund id {refund_id!r}, no refund line of this payment",
            )
            continue
        if refund["status"] in ("succeeded", "pending"):
            effective[refund_id].append(f"{refund['id']} {refund['status']} {refund['amount']}")
    for refund_id, in_effect in sorted(effective.items()):
        if len(in_effect) > 1 + reverses[refund_id]:
            result.add(
                ViolationKind.DOUBLE_EXECUTION,
                f"{refund_id} ({payment_id})",
                f"{len(in_effect)} provider refunds in effect: {', '.join(in_effect)}",
            )


def _recapture_outcome(events: list[tuple[str, dict[str, Any]]], payment_id: str) -> str | None:
    """What the provider's check said about ``payment_id`` in the latest undo."""
    outcome = None
    for event, detail in events:
        if event == "undo_started":
            checks = detail.get("recapture") or {}
            outcome = checks.get(payment_id)
    return outcome


def _check_stock_and_balances(record: ChaosRecord, store: _Store, result: Reconciliation) -> None:
    stock_deltas: Counter[str] = Counter()
    points: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for order in record.orders:
        stock_deltas.update(order.stock_deltas)
        points[order.customer_id] += order.points_delta
        credits[order.customer_id] += order.credits_delta
    for sku, initial in sorted(record.initial_stock.items()):
        result.checked["skus"] += 1
        want = initial + stock_deltas[sku]
        have = store.stock.get(sku)
        moved = store.stock_moved.get(sku, 0)
        if have != want:
            result.add(
                ViolationKind.STOCK_MISMATCH,
                sku,
                f"{have} available, expected {want} ({initial} {stock_deltas[sku]:+d})",
            )
        elif have - initial != moved:
            result.add(
                ViolationKind.STOCK_MISMATCH,
                sku,
                f"{have} available after {initial}, but its movements add up to {moved:+d}",
            )
    for customer, (initial_points, initial_credits) in sorted(record.initial_balances.items()):
        result.checked["customers"] += 1
        expected = (initial_points + points[customer], initial_credits + credits[customer])
        held = store.balances.get(customer)
        movements = store.balances_moved.get(customer, (0, 0))
        if held != expected:
            result.add(
                ViolationKind.BALANCE_MISMATCH,
                customer,
                f"(points, credits) = {held}, expected {expected}",
            )
        elif (held[0] - initial_points, held[1] - initial_credits) != movements:
            result.add(
                ViolationKind.BALANCE_MISMATCH,
                customer,
                f"balances {held} after {(initial_points, initial_credits)}, but the movements"
                f" add up to {movements}",
            )


def _seq(cancellation: _Cancellation) -> int:
    return cancellation.seq
