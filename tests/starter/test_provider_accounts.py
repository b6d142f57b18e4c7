"""``PROVIDER_ACCOUNTS`` binds each shop to its own account at the payment provider."""

import httpx
import pytest

from activities.provider_client import ACCOUNT_HEADER, PaymentProviderClient, segment
from starter.config import Settings, parse_provider_accounts


class TestParseProviderAccounts:
    def test_pairs_bind_shops_to_accounts(self) -> None:
        assert parse_provider_accounts(" shop-a:acct_1 , shop.b:acct_2,") == {
            "shop-a": "acct_1",
            "shop.b": "acct_2",
        }

    @pytest.mark.parametrize(
        "value",
        [
            "shop-a",  # no account
            "shop-a:",  # empty account
            ":acct_1",  # empty shop
            "shop:a:acct_1",  # which part is the shop?
            "shop-a:acct 1",  # space
            "shop-a:acct_1,shop-a:acct_2",  # one shop, two accounts
            "shop~a:acct_1",  # not an id
        ],
    )
    def test_anything_ambiguous_is_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match="PROVIDER_ACCOUNTS"):
            parse_provider_accounts(value)

    def test_settings_read_it_from_the_environment(self) -> None:
        settings = Settings.from_env({"PROVIDER_ACCOUNTS": "demo-shop:acct_demo"})
        assert settings.provider_accounts == {"demo-shop": "acct_demo"}
        assert Settings.from_env({}).provider_accounts == {}


class TestProviderRequests:
    @pytest.mark.parametrize(
        ("payment_id", "path"),
        [
            ("pay_1", "/v1/payments/pay_1/refunds"),
            ("P/recapture?x=", "/v1/payments/P%2Frecapture%3Fx%3D/refunds"),
            ("..", "/v1/payments/%2E%2E/refunds"),
            ("P/../../faults#", "/v1/payments/P%2F..%2F..%2Ffaults%23/refunds"),
            ("x\ny", "/v1/payments/x%0Ay/refunds"),
        ],
    )
    async def test_a_payment_id_is_one_path_segment_and_names_the_account(
        self, payment_id: str, path: str
    ) -> None:
        """Whatever the id holds, the call reaches the refund route of that one payment."""
        seen: list[httpx.Request] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(201, json={"id": "re_1", "status": "succeeded"})

        http = httpx.AsyncClient(base_url="http://provider", transport=httpx.MockTransport(answer))
        client = PaymentProviderClient("http://provider", http=http)
        await client.refund(payment_id, 100, "key-1", account="acct_a")
        await client.aclose()
        assert seen[0].url.raw_path.decode() == path
        assert seen[0].headers[ACCOUNT_HEADER] == "acct_a"

    def test_a_lone_dot_segment_is_escaped(self) -> None:
        assert segment(".") == "%2E"
        assert segment("a.b") == "a.b"
