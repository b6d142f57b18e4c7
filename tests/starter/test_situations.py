"""The catalog of situations (tools/situations.py) and the tools that pick from it: no servers."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import get_args

import httpx
import pytest

from domain.cancellation import CancellationStatus
from domain.errors import ErrorCode
from domain.order import TenderKind
from tools import bench, demo
from tools.chaos_driver import SHAPES, Endpoints, OrderDriver, ResilientHttp
from tools.chaos_reconcile import OrderRecord
from tools.situations import BY_KEY, SITUATIONS, Situation, Tool, split

REPO_ROOT = Path(__file__).resolve().parents[2]
TOTALS = (0, 1, 7, 999, 3_000, 10_000, 20_000, 29_990, 30_000, 123_457)
"""Order totals to split: the demo's and the bench's, and odd ones such as the chaos run's."""


def _users() -> dict[str, set[Tool]]:
    """Which tools pick each situation, as the tools themselves say."""
    users: dict[str, set[Tool]] = defaultdict(set)
    for scenario in demo.SCENARIOS:
        users[scenario.situation.key].add("demo")
    for shape in SHAPES:
        users[shape].add("chaos")
    for chosen in bench.MIX.values():
        users[chosen.key].add("bench")
    return users


def test_keys_names_and_sections_are_unique() -> None:
    for field in ("key", "name", "title"):
        values = [getattr(s, field) for s in SITUATIONS]
        assert len(values) == len(set(values)), field
    sections = [s.section for s in SITUATIONS if s.section is not None]
    assert len(sections) == len(set(sections))
    assert dict(BY_KEY) == {s.key: s for s in SITUATIONS}


def test_every_tool_picks_catalog_situations() -> None:
    assert all(scenario.situation is BY_KEY[scenario.situation.key] for scenario in demo.SCENARIOS)
    assert not set(SHAPES) - set(BY_KEY), "chaos shapes that are no situation of the catalog"
    assert all(chosen is BY_KEY[chosen.key] for chosen in bench.MIX.values())
    # The bench's kinds are the report's names: every one of them picks a situation.
    assert set(get_args(bench.Kind)) <= set(bench.MIX)
    assert set(bench.Workload().kinds) <= set(bench.MIX)


def test_every_situation_is_used_and_says_by_whom() -> None:
    users = _users()
    for situation in SITUATIONS:
        assert situation.used_by, f"{situation.key} is used by no tool"
        assert users[situation.key] == situation.used_by, situation.key


def test_the_demo_walks_the_guide_in_its_order() -> None:
    in_the_guide = [s for s in SITUATIONS if s.section is not None]
    assert [scenario.situation for scenario in demo.SCENARIOS] == in_the_guide
    for scenario in demo.SCENARIOS:
        assert (scenario.key, scenario.name, scenario.title, scenario.expected) == (
            scenario.situation.section,
            scenario.situation.name,
            scenario.situation.title,
            scenario.situation.expected,
        )
        assert scenario.name.startswith(f"{scenario.key[0]}-"), scenario.name


@pytest.mark.parametrize("situation", SITUATIONS, ids=lambda s: s.key)
def test_what_a_situation_ends_in_holds_together(situation: Situation) -> None:
    statuses = {status.value for status in CancellationStatus}
    codes = {code.value for code in ErrorCode}
    if situation.ends is None:
        assert situation.refused in codes, "refused outright needs a refusal code"
    else:
        assert situation.ends in statuses
    if situation.refused is not None:
        assert situation.refused in codes
    if situation.ends in (None, "rejected", "withdrawn"):
        assert situation.paid_back == "nothing" and not situation.order_canceled
    if situation.ends == "undone":
        assert not situation.order_canceled, "an undone order is back to what it was"
    assert situation.parts >= 1
    if situation.parts > 1:
        assert situation.ends == "canceled" and situation.order_canceled
    assert situation.opened_by and set(situation.opened_by) <= {"customer", "merchant"}


@pytest.mark.parametrize("situation", SITUATIONS, ids=lambda s: s.key)
def test_the_tender_mix_pays_the_whole_total(situation: Situation) -> None:
    kinds = {kind.value for kind in TenderKind}
    assert all(part.kind in kinds for part in situation.tenders)
    rests = [part for part in situation.tenders if part.share is None]
    shares = [part.share for part in situation.tenders if part.share is not None]
    assert all(0 < share < 1 for share in shares)
    if situation.tenders:
        assert len(rests) == 1, "exactly one tender takes what the shares leave"
        assert sum(shares, Fraction(0)) < 1
    else:
        assert situation.paid_back == "nothing"
    if not situation.pays_with("card"):
        assert situation.capture and not situation.card_behavior, "card terms without a card"
    for total in TOTALS:
        tenders = situation.split(total)
        assert all(amount > 0 for _, amount in tenders), (total, tenders)
        assert sum(amount for _, amount in tenders) == (total if situation.tenders else 0)


def test_split_rounds_the_shares_down_and_leaves_the_rest_to_the_rest() -> None:
    points_and_credits = BY_KEY["points_and_credits"]
    assert split(points_and_credits.tenders, 10_000) == [("points", 4_000), ("credits", 6_000)]
    assert split(points_and_credits.tenders, 7) == [("points", 2), ("credits", 5)]
    assert split(BY_KEY["card_and_points_accepted"].tenders, 30_000) == [
        ("points", 5_000),
        ("card", 25_000),
    ]
    assert split(BY_KEY["zero_amount"].tenders, 3_000) == []


def test_the_bench_mix_pays_its_orders_as_the_catalog_says() -> None:
    assert bench.MIX["card"].split(bench.ORDER_TOTAL) == [("card", bench.ORDER_TOTAL)]
    assert [kind for kind, _ in bench.MIX["card+points"].split(bench.ORDER_TOTAL)] == [
        "points",
        "card",
    ]
    for kind in ("bank", "bank-idle"):
        assert bench.MIX[kind].split(bench.ORDER_TOTAL) == [("bank_transfer", bench.ORDER_TOTAL)]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_chaos_driver_pays_each_shape_as_its_situation(shape: str) -> None:
    record = OrderRecord(order_id="o0001", shape=shape, customer_id="customer-0")
    endpoints = Endpoints("http://hook.invalid", "http://sandbox.invalid", "token")
    driver = OrderDriver(endpoints, ResilientHttp(httpx.AsyncClient()), record, random.Random(1))
    situation = BY_KEY[shape]
    for total in TOTALS:
        tenders = driver.paid_as_situation(total, extra=1)
        assert [(t.kind, t.amount) for t in tenders] == situation.split(total)
        assert [t.tender_id for t in tenders] == [f"t{n}" for n in range(1, len(tenders) + 1)]
        for tender in tenders:
            if tender.kind == "card":
                assert tender.capture is situation.capture
                assert dict(situation.card_behavior).items() <= tender.behavior.items()
                assert tender.behavior["extra"] == 1


def test_the_reliability_doc_lists_every_chaos_shape() -> None:
    text = (REPO_ROOT / "docs" / "reliability.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(SHAPES) <= rows
    assert rows & set(BY_KEY) == set(SHAPES), "a documented shape the driver no longer runs"
