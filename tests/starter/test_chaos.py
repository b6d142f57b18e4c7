"""The chaos run: a short one under every kind of fault reconciles, and the reconciler can fail.

One short run (a cancellation of each shape, one fault of each kind) on its own stack serves
the module: the first test checks its report, the second plants a double refund, a lost refund
and a reversed refund the database still counts as paid in that stack's sandbox and database,
and checks the reconciler finds exactly those.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from tools.bench_relay import Arrival, RelayProbe
from tools.chaos import (
    ChaosOptions,
    ChaosReport,
    ChaosSession,
    chaos_session,
    parse_options,
    plan_faults,
)
from tools.chaos_driver import (
    ATTEMPT_TIMEOUT,
    CUSTOMERS,
    SHAPES,
    SHOP_ID,
    Endpoints,
    OrderDriver,
    ResilientHttp,
)
from tools.chaos_events import check_events
from tools.chaos_reconcile import OrderRecord, ViolationKind, reconcile
from tools.chaos_stack import KEY_EXPIRY_JUMP_SECONDS, FaultKind

# One cancellation of every shape, so the planted-violation tests find each one, and one
# fault of every kind (key_expiry too, since findings 13 and 14 are fixed).
SHORT = ChaosOptions(cancellations=len(SHAPES), faults_per_kind=1, seed=20261126)
# About 40 s, or two and a half minutes when the hook_kill fault cuts a POST: its claim stays
# pending until the hook's 2-minute lease (CLAIM_LEASE) ends, and the driver retries it with
# its key until then. A loaded CI box may need more.
SHORT_RUN_BUDGET_SECONDS = 300.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short_run() -> AsyncIterator[tuple[ChaosSession, ChaosReport, float]]:
    """The short chaos run, with its stack kept up for the tests that look at it."""
    # Not pytest's tmp_path: PostgreSQL runs as another user and must enter every parent folder.
    root = Path(tempfile.mkdtemp(prefix="test-chaos-"))
    began = time.monotonic()
    try:
        async with chaos_session(SHORT, root) as session:
            report = await session.run()
            yield session, report, time.monotonic() - began
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(480)
async def test_short_chaos_run_ends_every_cancellation_right(short_run):
    """Worker and hook kills, sandbox, PostgreSQL and Temporal restarts, provider faults, keys
    in use and webhook replays, with webhooks late, twice and shuffled, leave no violation."""
    _, report, seconds = short_run
    assert report.violations == 0, report.table()
    assert len(report.record.orders) == SHORT.cancellations
    faults = report.as_json()["faults"]
    assert {kind: faults[kind.value] for kind in FaultKind} == dict.fromkeys(
        FaultKind, SHORT.faults_per_kind
    )
    assert report.reconciliation.checked["ledger movements"] > 0
    # Every event reached the run's webhook receiver, in order (else a violation above),
    # although worker kills took the relay down with them.
    checked = report.reconciliation.checked
    assert checked["events"] > 3 * SHORT.cancellations, report.table()
    assert checked["event deliveries"] >= checked["events"]
    # The order whose refund the provider reversed after success was re-paid (as credits).
    assert report.reconciliation.checked["reversed refund lines"] >= 1, report.table()
    assert seconds < SHORT_RUN_BUDGET_SECONDS, report.table()


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(300)
async def test_reconciler_catches_a_planted_double_refund_and_lost_refund(short_run):
    """A refund made twice for one line, a refund line that moved no money, and a reversed
    refund the database still counts as paid by the provider, are found."""
    session, _, _ = short_run
    world = session.world
    assert not (await reconcile(session.record, world)).violations

    undone = next(o for o in session.record.orders if o.shape == "undo_recaptured")
    (recaptured_payment,) = undone.payments
    canceled = next(o for o in session.record.orders if o.shape == "card_request_accepted")
    reversed_order = next(o for o in session.record.orders if o.shape == "card_refund_reversed")
    conn = await asyncpg.connect(world.database_url)
    try:
        line = await conn.fetchrow(
            "SELECT r.refund_id, r.amount FROM refund_lines r JOIN cancellations c"
            " USING (cancellation_id) WHERE c.order_id=$1",
            undone.order_id,
        )
        assert line is not None
        target = await conn.fetchrow(
            "SELECT c.cancellation_id, r.tender_id FROM cancellations c"
            " JOIN refund_lines r USING (cancellation_id) WHERE c.order_id=$1",
            canceled.order_id,
        )
        assert target is not None
        cancellation_id, tender_id = target["cancellation_id"], target["tender_id"]
        # The double refund: the undone line's money goes out again, under a new key.
        async with httpx.AsyncClient(base_url=world.sandbox_url, trust_env=False) as sandbox:
            answer = await sandbox.post(
                f"/v1/payments/{recaptured_payment}/refunds",
                json={"amount": line["amount"], "metadata": {"refund_id": line["refund_id"]}},
                headers={"Idempotency-Key": f"{line['refund_id']}/try-2"},
            )
            assert answer.status_code == 201, answer.text
        # The lost refund: the database says the provider refunded a line it never saw.
        lost_refund_id = f"{cancellation_id}-r9"
        await conn.execute(
            "INSERT INTO refund_lines (refund_id, cancellation_id, tender_id, tender_kind,"
            " method, channel, amount, status, provider_reference)"
            " VALUES ($1, $2, $3, 'card', 'original', 'provider', 700, 'succeeded', 're_planted')",
            lost_refund_id,
            cancellation_id,
            tender_id,
        )
        # The reversal forgotten: the database says the card refund stands (the line was
        # switched to credits after the provider reversed it).
        reversed_refund_id = await conn.fetchval(
            "UPDATE refund_lines r SET channel='provider', method='original', status='succeeded'"
            " FROM cancellations c WHERE c.cancellation_id=r.cancellation_id AND c.order_id=$1"
            " RETURNING r.refund_id",
            reversed_order.order_id,
        )
        assert reversed_refund_id is not None
    finally:
        await conn.close()

    found = await reconcile(session.record, world)

    kinds = {(v.kind, v.subject.split(" ")[0]) for v in found.violations}
    assert (ViolationKind.DOUBLE_EXECUTION, line["refund_id"]) in kinds, found.violations
    assert (ViolationKind.EXPECTATION_MISMATCH, recaptured_payment) in kinds, found.violations
    assert (ViolationKind.LOST_REFUND, lost_refund_id) in kinds, found.violations
    assert (ViolationKind.LOST_REFUND, reversed_refund_id) in kinds, found.violations
    assert {v.kind for v in found.violations} <= {
        ViolationKind.DOUBLE_EXECUTION,
        ViolationKind.UNRECORDED_MOVEMENT,
        ViolationKind.EXPECTATION_MISMATCH,
        ViolationKind.LOST_REFUND,
        ViolationKind.INCOMPLETE_REFUND,
    }, found.violations


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_the_events_check_finds_events_that_never_arrived_or_came_out_of_order(short_run):
    session, _, _ = short_run
    database_url = session.world.database_url
    nothing_arrived = await check_events(database_url, SHOP_ID, RelayProbe())
    assert nothing_arrived.events > 0
    assert {f.kind for f in nothing_arrived.findings or []} == {"event_not_delivered"}
    assert len(nothing_arrived.findings or []) == nothing_arrived.events

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, cancellation_id, sequence, type FROM webhook_events"
            " WHERE shop_id=$1 ORDER BY cancellation_id, sequence",
            SHOP_ID,
        )
    finally:
        await conn.close()
    backwards = RelayProbe()
    backwards.arrivals = [
        Arrival(r["event_id"], r["cancellation_id"], r["sequence"], r["type"], 0.0, 0.0)
        for r in reversed(rows)
    ]
    found = await check_events(database_url, SHOP_ID, backwards)
    assert {f.kind for f in found.findings or []} == {"event_out_of_order"}


def test_fault_plan_spreads_each_kind_over_the_window():
    """Every kind gets its share of faults, one per slot, all inside the window."""
    plan = plan_faults(3, 60.0, random.Random(7))
    assert sorted(kind.value for _, kind in plan) == sorted(
        kind.value for kind in FaultKind for _ in range(3)
    )
    times = [at for at, _ in plan]
    assert times == sorted(times)
    assert times[0] > 0 and times[-1] < 60.0


def test_fault_plan_takes_only_the_kinds_asked_for():
    """Skipped kinds get no slot."""
    plan = plan_faults(2, 30.0, random.Random(7), (FaultKind.HOOK_KILL, FaultKind.KEY_IN_USE))
    assert sorted(kind.value for _, kind in plan) == ["hook_kill"] * 2 + ["key_in_use"] * 2
    options = parse_options(["--skip-fault", "key_expiry", "--skip-fault", "hook_kill"])
    assert set(FaultKind) - set(options.kinds) == {FaultKind.KEY_EXPIRY, FaultKind.HOOK_KILL}


def test_command_line_takes_a_rate_per_second():
    options = parse_options(["--cancellations", "300", "--faults-per-kind", "30", "--rate", "1/s"])
    assert (options.cancellations, options.faults_per_kind, options.rate) == (300, 30, 1.0)
    with pytest.raises(SystemExit):
        parse_options(["--rate", "fast"])


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_an_older_success_delivered_after_a_reversal_leaves_the_line_failed(short_run):
    """A provider may deliver a refund's events out of order: the reversal must stand."""
    session, _, _ = short_run
    stack = session.stack
    endpoints = Endpoints(stack.endpoints.hook_url, stack.endpoints.sandbox_url, stack.token)
    # Not in the run's record: this runs after the tests that reconcile the short run.
    record = OrderRecord(order_id="late-success", shape="probe", customer_id=CUSTOMERS[0])
    async with httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, trust_env=False) as client:
        d = OrderDriver(endpoints, ResilientHttp(client), record, random.Random(1))
        await d.place(
            lambda total: [d.card(total, refund="fail_after_success", fail_after_seconds=1.0)]
        )
        cid = await d.start(merchant=True)
        await d.until(
            cid,
            "the refund reversed",
            lambda v: v["status"] == "in_progress" and v["needs_attention"] == "refund_reversed",
        )
        detail, broke = await stack.replay_webhook(record.payments, random.Random(3))
        assert broke is None, detail
        await asyncio.sleep(3.0)  # the hook signals the run, the run applies it
        view = await d.until(cid, "the run's own view", lambda v: True, live=True)

    line = view["refunds"][0]
    assert (view["status"], view["needs_attention"], line["status"]) == (
        "in_progress",
        "refund_reversed",
        "failed",
    ), [h["event"] for h in view["history"]]


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_a_void_whose_answer_was_lost_counts_after_its_key_expired(short_run):
    """The provider voided the authorization, its answer was lost, then it forgot the key:
    the retry must find the void done, not fail the line."""
    session, _, _ = short_run
    stack = session.stack
    endpoints = Endpoints(stack.endpoints.hook_url, stack.endpoints.sandbox_url, stack.token)
    record = OrderRecord(order_id="lost-void", shape="probe", customer_id=CUSTOMERS[0])
    async with (
        httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, trust_env=False) as client,
        httpx.AsyncClient(base_url=stack.endpoints.sandbox_url, trust_env=False) as sandbox,
    ):
        d = OrderDriver(endpoints, ResilientHttp(client), record, random.Random(1))
        await d.place(lambda total: [d.card(total, capture=False)])
        (payment_id,) = record.payments
        # What the provider saw of a first attempt whose answer was lost: the void, under the
        # key the run sends (cancellation ids and keys are deterministic), then 25 h.
        voided = await sandbox.post(
            f"/v1/payments/{payment_id}/void",
            json={},
            headers={"Idempotency-Key": f"cancellation~{SHOP_ID}~lost-void~1-r1/try-1"},
        )
        assert voided.status_code == 200, voided.text
        await stack.advance_provider_clock(KEY_EXPIRY_JUMP_SECONDS)
        cid = await d.start(merchant=True)
        view = await d.until(
            cid, "an end", lambda v: v["status"] == "canceled" or v["needs_attention"] is not None
        )

    assert (view["status"], view["needs_attention"]) == ("canceled", None), view["refunds"]
