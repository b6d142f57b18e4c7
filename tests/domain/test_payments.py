"""A card tender names a payment of the shop's own account, in its currency, with enough
money on it."""

from domain.order import Tender, TenderKind
from domain.payments import ProviderPayment, card_tenders_by_payment, payment_mismatch


def _card(tender_id: str, amount: int, payment_id: str = "pay_1") -> Tender:
    return Tender(tender_id=tender_id, kind=TenderKind.CARD, amount=amount, payment_id=payment_id)


def _payment(**changes) -> ProviderPayment:
    values = {
        "id": "pay_1",
        "amount": 10_000,
        "currency": "KRW",
        "status": "captured",
        "captured_amount": 10_000,
        "refunded_amount": 0,
    }
    return ProviderPayment(**(values | changes))


class TestPaymentMismatch:
    def test_a_payment_the_account_does_not_have_is_refused_naming_the_tender(self) -> None:
        problem = payment_mismatch([_card("t1", 100)], "KRW", None)
        assert problem is not None and "t1" in problem and "pay_1" in problem

    def test_a_payment_in_another_currency_is_refused(self) -> None:
        problem = payment_mismatch([_card("t1", 100)], "KRW", _payment(currency="USD"))
        assert problem is not None and "USD" in problem

    def test_a_payment_with_less_than_the_tender_is_refused(self) -> None:
        assert payment_mismatch([_card("t1", 10_001)], "KRW", _payment()) is not None

    def test_money_already_refunded_does_not_count(self) -> None:
        refunded = _payment(status="partially_refunded", refunded_amount=4_000)
        assert payment_mismatch([_card("t1", 6_000)], "KRW", refunded) is None
        assert payment_mismatch([_card("t1", 6_001)], "KRW", refunded) is not None

    def test_an_authorization_counts_in_full_and_a_void_not_at_all(self) -> None:
        authorized = _payment(status="authorized", captured_amount=0)
        assert payment_mismatch([_card("t1", 10_000)], "KRW", authorized) is None
        voided = _payment(status="voided", captured_amount=0)
        assert payment_mismatch([_card("t1", 1)], "KRW", voided) is not None

    def test_two_tenders_naming_one_payment_must_fit_in_it_together(self) -> None:
        tenders = [_card("t1", 6_000), _card("t2", 6_000)]
        grouped = card_tenders_by_payment(tenders)
        assert list(grouped) == ["pay_1"]
        assert payment_mismatch(grouped["pay_1"], "KRW", _payment()) is not None

    def test_a_payment_that_covers_the_tender_passes(self) -> None:
        assert payment_mismatch([_card("t1", 10_000)], "KRW", _payment()) is None
