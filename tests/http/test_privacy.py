"""Bank account numbers: masked in every answer, absent from every log line."""

from __future__ import annotations

import logging

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

NUMBER = "110-987-654321"
DIGITS = "110987654321"
BANK_ACCOUNT = {"bank": "KB", "account_number": NUMBER, "holder": "Ana Kim"}


def _leaks(text: str) -> bool:
    return NUMBER in text or DIGITS in text or "987-654321" in text


async def test_account_numbers_are_masked_in_answers_and_never_logged(shop, caplog):
    """Walk every route that takes a bank account, including refusals and replays, while the
    hook's access log and the worker's logs are captured."""
    caplog.set_level(logging.DEBUG)
    answers = []
    order_id = await shop.put_order(
        items=[{"item_id": "i1", "sku": "sku-tee", "quantity": 1, "unit_price": 7000}],
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}],
    )
    await shop.request_cancellation(order_id)
    accept_path = shop.cancellation_path(order_id, "/accept")
    accept = {"reason_code": "changed_mind", "bank_account": BANK_ACCOUNT}
    # Refusals echo nothing of the body: a wrong type next to the number, an invalid number.
    answers.append(await shop.http.post(accept_path, json=accept | {"restock": "maybe"}))
    answers.append(
        await shop.http.post(
            accept_path, json=accept | {"bank_account": BANK_ACCOUNT | {"account_number": "12!"}}
        )
    )
    answers.append(await shop.http.post(accept_path, json=accept | {"extra": NUMBER}))
    assert [a.status_code for a in answers] == [422, 422, 422]

    headers = {"Idempotency-Key": "bank-accept"}
    accepted = await shop.http.post(accept_path, json=accept, headers=headers)
    assert accepted.status_code == 200, accepted.text
    answers.append(accepted)
    answers.append(await shop.http.post(accept_path, json=accept, headers=headers))  # replay
    view = await shop.wait_for(
        order_id, lambda v: v["refunds"] and v["refunds"][0]["status"] == "awaiting_confirmation"
    )
    assert view["refunds"][0]["bank_account"]["masked_number"] == "**********4321"
    answers.append(await shop.http.get(shop.cancellation_path(order_id)))
    answers.append(await shop.http.get(f"{shop.base}/cancellations"))
    answers.append(await shop.http.get(shop.order_path(order_id, "/cancellations")))

    # A declined card refund switched to a bank deposit carries an account, too.
    payment = await shop.card_payment(30000, refund="decline")
    card_order = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(card_order)
    await shop.http.post(
        shop.cancellation_path(card_order, "/accept"), json={"reason_code": "sold_out"}
    )
    failed = await shop.wait_for(card_order, lambda v: v["needs_attention"] == "refund_failed")
    retry_path = shop.cancellation_path(
        card_order, f"/refunds/{failed['refunds'][0]['refund_id']}/retry"
    )
    answers.append(await shop.http.post(retry_path, json={"method": "bank_deposit"}))  # no account
    retried = await shop.http.post(
        retry_path, json={"method": "bank_deposit", "bank_account": BANK_ACCOUNT}
    )
    assert retried.status_code == 200, retried.text
    answers.append(retried)

    for answer in answers:
        assert not _leaks(answer.text), answer.text
    access_lines = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access_lines) >= len(answers)
    assert not _leaks(caplog.text)
    assert all(not _leaks(str(r.args)) for r in caplog.records)


async def test_the_codec_path_token_is_redacted_from_the_access_log():
    """The Web UI's codec URL carries the operator token; the access log must not."""
    import logging

    from starter.http.errors import RedactCodecToken

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "POST", "/codec/s3cret-token/decode?x=1", "1.1", 200),
        None,
    )
    assert RedactCodecToken().filter(record)
    assert "s3cret-token" not in record.getMessage()
    assert "/codec/***/decode" in record.getMessage()
