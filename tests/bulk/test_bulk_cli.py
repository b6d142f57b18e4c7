"""``python -m starter bulk-cancel``: the dry run, the job followed to its end, refusals."""

from __future__ import annotations

import json

import pytest

from starter import cli
from starter.config import Settings
from tests.bulk.conftest import OTHER_SKU, SKU, Shop

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _run(shop: Shop, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    settings = Settings(database_url="unused-the-client-is-given", task_queue=shop.task_queue)
    code = await cli.run(list(argv), client=shop.client, settings=settings)
    return code, capsys.readouterr().out


async def test_dry_run_then_the_job_waited_for(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run prints each order's plan and starts nothing; --wait follows the job."""
    partial = await shop.order(items=[(SKU, 1, 10000), (OTHER_SKU, 1, 7000)])
    code, out = await _run(shop, capsys, "bulk-cancel", shop.shop_id, SKU, "--dry-run")
    assert code == 0, out
    assert "nothing was started" in out and partial in out and "i1×1" in out
    assert await shop.store.cancellations_of_order(shop.shop_id, partial) == []

    code, out = await _run(shop, capsys, "--json", "bulk-cancel", shop.shop_id, SKU, "--wait")
    assert code == 0, out
    job = json.loads(out)
    assert job["status"] == "completed"
    assert job["counts"] == {"matched": 1, "started": 1, "already_open": 0, "refused": 0}
    assert len(await shop.store.cancellations_of_order(shop.shop_id, partial)) == 1


async def test_refusals_exit_with_their_code(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bank deposit can't be done in bulk (exit 2); a bad SKU is a usage error too."""
    code, out = await _run(
        shop, capsys, "--json", "bulk-cancel", shop.shop_id, SKU, "--refund-method", "bank_deposit"
    )
    assert code == 2 and json.loads(out)["error"]["code"] == "validation_error"
    code, out = await _run(shop, capsys, "--json", "bulk-cancel", shop.shop_id, "bad sku")
    assert code == 2 and json.loads(out)["error"]["code"] == "validation_error"
