"""Requests generated from the hook's own ``/openapi.json``, and hostile input by hand.

The generated run is short for CI (``HOOK_FUZZ_EXAMPLES``, default 25, per operation and mode,
with a fixed seed);
set ``HOOK_FUZZ_EXAMPLES=500`` for a long run. Every answer must be a declared status with a
body matching its declared schema, and never a 5xx.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HOOK_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_generated_requests_get_declared_answers_and_never_a_server_error(hook_stack, shop):
    """Valid and invalid requests for every operation, with the shop's token on its paths."""
    schema = schemathesis.openapi.from_url(f"{hook_stack.url}/openapi.json", timeout=10)
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy from the environment
    headers = {"Authorization": f"Bearer {shop.token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 28
    for operation in operations:
        fixed = {"shop_id": shop.shop_id} if "{shop_id}" in operation.path else None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=fixed, headers=headers
            )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def call(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(
                    base_url=hook_stack.url, session=session, checks=CHECKS, timeout=30
                )

            try:
                call()
            except Unsatisfiable:  # nothing to make invalid (GET /healthz has no input)
                assert mode is GenerationMode.NEGATIVE
            except Exception as err:  # collect every operation's failure, then report all
                failures.append(f"{operation.label} ({mode.value}): {err}")
    assert not failures, "\n\n".join(failures)


ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/accept", b"{"),
        ("/accept", b'{"reason_code": "changed_mind",}'),
        ("/accept", b"\xff\xfe"),
        ("/accept", json.dumps(ACCEPT | {"restock": "perhaps"})),
        ("/accept", json.dumps(ACCEPT | {"reason_code": 7})),
        ("/accept", json.dumps(ACCEPT | {"reason": "x" * 10_240})),
        ("/accept", json.dumps([ACCEPT])),
        ("/accept", json.dumps(ACCEPT | {"refund_method": "cash"})),
        ("/reject", json.dumps({"reason": ""})),
        ("/reject", json.dumps({"reason": "x" * 10_240})),
        ("/refunds/r1/confirm", json.dumps({"reference": "r" * 10_240})),
        (
            "",
            json.dumps(
                {"initiated_by": "customer", "channel": "my_account", "reason": "x" * 10_240}
            ),
        ),
        (
            "",
            json.dumps(
                {
                    "initiated_by": "customer",
                    "channel": "my_account",
                    "items": [{"item_id": "i1", "quantity": -1}],
                }
            ),
        ),
        (
            "",
            json.dumps(
                {
                    "initiated_by": "customer",
                    "channel": "my_account",
                    "items": [{"item_id": "i1", "quantity": 10**16}],
                }
            ),
        ),
        ("", "null"),
        ("/reject", json.dumps({"reason": "NUL \x00 in text"})),
        ("/reject", '{"reason": ' + "[" * 900 + '"\\u0000"' + "]" * 900 + "}"),
        ("/reject", '{"reason": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("", json.dumps({"initiated_by": "customer", "channel": "my_account", "reason": "\x00"})),
    ],
    ids=[
        "truncated-json",
        "trailing-comma",
        "not-utf8",
        "bool-as-string",
        "enum-as-number",
        "10kb-reason",
        "array-body",
        "unknown-method",
        "empty-reason",
        "10kb-reject-reason",
        "10kb-reference",
        "10kb-start-reason",
        "negative-quantity",
        "huge-quantity",
        "null-body",
        "nul-in-reason",
        "deeply-nested-nul",
        "too-deeply-nested",
        "nul-in-start",
    ],
)
async def test_hostile_cancellation_input_is_a_validation_error_and_changes_nothing(
    shop, route, body
):
    order_id = await shop.put_order()
    await shop.request_cancellation(order_id)
    before = await shop.view(order_id), (await shop.http.get(shop.order_path(order_id))).json()
    answer = await shop.http.post(
        shop.cancellation_path(order_id, route),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    after = await shop.view(order_id), (await shop.http.get(shop.order_path(order_id))).json()
    assert after == before


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "change",
    [
        {"shipping_fee": -1},
        {"shipping_fee": 10**15 + 1},
        {"shipping_fee": 1.5},
        {"items": [{"item_id": "i1", "sku": "s", "quantity": 1, "unit_price": -5}]},
        {"items": [{"item_id": "i1", "sku": "s", "quantity": 1, "unit_price": 10**16}]},
        {"tenders": [{"tender_id": "t1", "kind": "points", "amount": -30000}]},
        {"customer_id": "c" * 10_240},
        {"customer_id": "bad id with spaces"},
        {"items": "all of them"},
    ],
    ids=[
        "negative-fee",
        "huge-fee",
        "float-fee",
        "negative-price",
        "huge-price",
        "negative-tender",
        "10kb-customer",
        "bad-customer-id",
        "items-as-string",
    ],
)
async def test_hostile_order_documents_are_refused_and_the_order_stays(shop, change):
    order_id = await shop.put_order()
    before = (await shop.http.get(shop.order_path(order_id))).json()
    document = {k: v for k, v in before.items() if k not in ("shop_id", "order_id")}
    document.pop("status_before_cancellation")
    answer = await shop.http.put(shop.order_path(order_id), json=document | change)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert (await shop.http.get(shop.order_path(order_id))).json() == before
