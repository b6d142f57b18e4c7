"""The admin pages' defences over plain HTTP: sessions, shops, CSRF, cookies, escaping."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTRIBUTE = '"><img src=x onerror=alert(1)>'


async def _requested(shop, **extra) -> tuple[str, dict[str, Any]]:
    order_id = await shop.put_order()
    view = await shop.request_cancellation(order_id, **extra)
    return order_id, view


async def test_pages_without_a_session_redirect_to_sign_in(shop, merchant_client):
    order_id, view = await _requested(shop, reason="only for the signed-in")
    page = f"/admin/cancellations/{view['cancellation_id']}"
    for path in (
        "/admin",
        "/admin/cancellations",
        page,
        f"/admin/orders/{order_id}",
        "/admin/settings",
    ):
        answer = await merchant_client.get(path, follow_redirects=True)
        assert answer.status_code == 200 and "/admin/sign-in" in str(answer.url), path
        assert (
            "only for the signed-in" not in answer.text
            and "Cancellation requested" not in answer.text
        )
    posted = await merchant_client.post(f"{page}/reject", data={"reason": "no", "csrf_token": "x"})
    assert posted.status_code == 303 and posted.headers["location"].startswith("/admin/sign-in")
    assert (await shop.view(order_id))["status"] == "requested"


async def test_a_wrong_token_or_a_bad_name_does_not_sign_in(shop, new_merchant):
    stranger = new_merchant()
    refused = await stranger.sign_in("not-a-token", "ana")
    assert refused.status_code == 401 and "That token is not valid" in refused.text
    assert "admin_session" not in stranger.cookies
    named = await stranger.sign_in(shop.token, "ana smith")
    assert named.status_code == 422 and "admin_session" not in stranger.cookies


async def test_a_tampered_session_cookie_is_refused(shop, other_shop, merchant):
    """Changing the signed shop in the cookie (to another shop's) ends the session."""
    import base64
    import json

    body, _, mac = merchant.cookies["admin_session"].partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["shop"] = other_shop.shop_id
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    merchant.cookies["admin_session"] = f"{forged}.{mac}"
    answer = await merchant.get("/admin/cancellations")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in")


async def test_one_shops_session_cannot_open_or_act_on_another_shops_pages(
    shop, other_shop, merchant
):
    """Shop A's merchant gets 404 for shop B's cancellation and order, and changes nothing."""
    order_id, view = await _requested(other_shop, reason="secret reason of shop B")
    page = f"/admin/cancellations/{view['cancellation_id']}"
    for path in (page, f"{page}/accept", f"{page}/undo", f"/admin/orders/{order_id}"):
        answer = await merchant.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "secret reason of shop B" not in answer.text
    for path, form in (
        (f"{page}/reject", {"reason": "nope"}),
        (f"{page}/accept", {"reason_code": "changed_mind", "step": "confirm"}),
        (f"{page}/undo", {"reason": "nope"}),
        (f"/admin/orders/{order_id}/cancel", {"reason_code": "sold_out", "step": "confirm"}),
    ):
        answer = await merchant.post(path, form)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "secret reason of shop B" not in answer.text
    assert (await other_shop.view(order_id))["status"] == "requested"
    listed = await merchant.get("/admin/cancellations")
    assert view["cancellation_id"] not in listed.text


async def test_every_form_needs_the_sessions_csrf_token(shop, merchant, new_merchant):
    order_id, view = await _requested(shop)
    page = f"/admin/cancellations/{view['cancellation_id']}"
    missing = await merchant.post(f"{page}/reject", {"reason": "no"}, csrf=None)
    wrong = await merchant.post(f"{page}/reject", {"reason": "no"}, csrf="forged-token")
    assert missing.status_code == 403 and wrong.status_code == 403
    assert "This form has expired" in wrong.text
    settings = await merchant.post("/admin/settings", {"undo_window": "PT1M"}, csrf=None)
    assert settings.status_code == 403
    assert (await shop.view(order_id))["status"] == "requested"
    # The sign-in form has its own token, bound to a short-lived cookie.
    fresh = new_merchant()
    await fresh.get("/admin/sign-in")
    no_token = await fresh.post("/admin/sign-in", {"token": shop.token, "name": "ana"}, csrf=None)
    assert no_token.status_code == 403 and "admin_session" not in fresh.cookies


async def test_session_cookie_flags_and_sign_out(shop, merchant):
    (cookie,) = [h for h in merchant.set_cookie_headers if h.startswith("admin_session=")]
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "secure" in flags
    assert flags["samesite"].lower().endswith("strict")
    assert flags["path"].strip() == "Path=/admin"
    assert 0 < int(flags["max-age"].split("=")[1]) <= 8 * 3600
    answer = await merchant.post("/admin/sign-out", {})
    assert answer.status_code == 303
    assert "admin_session" not in merchant.cookies
    assert (await merchant.get("/admin/cancellations")).status_code == 303


async def test_pages_carry_a_strict_content_security_policy(merchant):
    answer = await merchant.get("/admin/cancellations")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    css = await merchant.get("/admin/static/admin.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


async def test_customer_text_is_escaped_and_the_actor_comes_from_the_session(shop, merchant):
    """Hostile reasons and notes show as text; a form's own ``actor`` field is ignored."""
    order_id, view = await _requested(shop, reason=XSS_SCRIPT)
    page = f"/admin/cancellations/{view['cancellation_id']}"
    answer = await merchant.post(
        f"{page}/reject",
        {"reason": XSS_ATTRIBUTE, "customer_note": XSS_SCRIPT, "actor": "merchant:mallory"},
    )
    assert answer.status_code == 303, answer.text
    html = (await merchant.get(page)).text
    for hostile in (XSS_SCRIPT, XSS_ATTRIBUTE, "<img src=x"):
        assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    rejected = await shop.view(order_id)
    assert rejected["status"] == "rejected"
    assert rejected["history"][-1]["actor"] == "merchant:ana"
    assert "merchant:mallory" not in str(rejected["history"])
    listed = (await merchant.get("/admin/cancellations")).text
    assert XSS_SCRIPT not in listed


async def test_bad_input_answers_a_page_with_a_sentence_never_a_500(shop, merchant):
    order_id, view = await _requested(shop)
    page = f"/admin/cancellations/{view['cancellation_id']}"
    for path, params in (
        ("/admin/cancellations", {"status": "bogus"}),
        ("/admin/cancellations", {"cursor": "%%%"}),
        ("/admin/cancellations/bad%20id", {}),
        ("/admin/orders/no-such-order", {}),
    ):
        answer = await merchant.get(path, **params)
        assert answer.status_code in (404, 422), (path, answer.status_code)
        assert "text/html" in answer.headers["content-type"]
    accepted = await merchant.post(
        f"{page}/accept", {"reason_code": "no-such-reason", "step": "confirm"}
    )
    assert accepted.status_code == 422 and "check the form" in accepted.text
    repaid = await merchant.post(f"{page}/repayment", {"reference": "R", "amount": "lots"})
    assert repaid.status_code == 422
    settings = await merchant.post("/admin/settings", {"undo_window": "thirty days"})
    assert settings.status_code == 422 and "check the form" in settings.text
    assert (await shop.view(order_id))["status"] == "requested"
