"""Session cookies: signed, expiring, bound to one kind; no servers needed."""

from __future__ import annotations

import time

import pytest

from starter.config import ConfigError
from starter.http.admin.session import SESSION_SECONDS, BadSession, SessionSigner, valid_name

KEY = "k" * 32


def test_a_session_reads_back_with_its_shop_name_and_csrf_token():
    signer = SessionSigner(KEY)
    session = signer.session(signer.new_session("shop-a", "ana"))
    assert (session.shop_id, session.name, session.actor) == ("shop-a", "ana", "merchant:ana")
    assert len(session.csrf) >= 32
    assert signer.session(signer.new_session("shop-a", "ana")).csrf != session.csrf


def test_an_expired_session_is_refused():
    signer = SessionSigner(KEY)
    cookie = signer.new_session("shop-a", "ana", now=time.time() - SESSION_SECONDS - 1)
    with pytest.raises(BadSession):
        signer.session(cookie)


@pytest.mark.parametrize(
    "cookie",
    [None, "", "garbage", "a.b", "é.é", "x" * 5000],
    ids=["missing", "empty", "no-dot", "bad-mac", "non-ascii", "huge"],
)
def test_malformed_cookies_are_refused(cookie):
    with pytest.raises(BadSession):
        SessionSigner(KEY).session(cookie)


def test_another_key_or_kind_does_not_verify():
    """A cookie signed with another key, or a sign-in cookie used as a session, is refused."""
    cookie = SessionSigner(KEY).new_session("shop-a", "ana")
    with pytest.raises(BadSession):
        SessionSigner("z" * 32).session(cookie)
    sign_in, _ = SessionSigner(KEY).new_sign_in()
    with pytest.raises(BadSession):
        SessionSigner(KEY).session(sign_in)


def test_a_short_key_stops_the_hook_and_no_key_means_a_random_one(caplog):
    with pytest.raises(ConfigError):
        SessionSigner("short")
    first, second = SessionSigner(None), SessionSigner(None)
    with pytest.raises(BadSession):
        second.session(first.new_session("shop-a", "ana"))
    assert "ADMIN_SESSION_KEY is not set" in caplog.text


@pytest.mark.parametrize("name", ["ana", "jane.doe", "jane@shop.example", "a" * 100])
def test_names_that_can_be_actors(name):
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "ana smith", "<script>", "-ana", "a" * 101, "ana\n"])
def test_names_that_cannot(name):
    assert not valid_name(name)
