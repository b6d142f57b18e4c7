"""The ids built from a caller's ids never collide across shops."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.contract import cancellation_workflow_id, parse_cancellation_id

# Everything the API accepts as a shop or order id: ``domain.order.Identifier``.
FIRST = string.ascii_letters + string.digits
REST = FIRST + "_.:-"
identifiers = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(FIRST),
    st.text(alphabet=REST, max_size=63),
)
triples = st.tuples(identifiers, identifiers, st.integers(min_value=1, max_value=10**6))


class TestCancellationIds:
    def test_a_shop_whose_id_ends_where_anothers_order_begins_gets_its_own_id(self) -> None:
        """Release 1 spelled shop ``acc`` + order ``a-1`` like shop ``acc-a`` + order ``1``."""
        assert cancellation_workflow_id("acc", "a-1", 1) != cancellation_workflow_id(
            "acc-a", "1", 1
        )
        assert cancellation_workflow_id("acc", "a-1", 1) == "cancellation~acc~a-1~1"

    @given(triples, triples)
    def test_different_shop_order_and_count_never_give_the_same_id(self, a, b) -> None:
        if a != b:
            assert cancellation_workflow_id(*a) != cancellation_workflow_id(*b)

    @given(triples)
    def test_an_id_splits_back_into_its_shop_order_and_count(self, triple) -> None:
        assert parse_cancellation_id(cancellation_workflow_id(*triple)) == triple

    @given(triples, st.integers(min_value=1, max_value=20), st.integers(1, 20))
    def test_refund_ids_and_store_keys_built_from_it_stay_apart(self, triple, n, m) -> None:
        """Refund ids (``{id}-r{n}``) and movement keys (``{id}:restock:{item}``) of two
        cancellations differ whenever the cancellations or the lines differ."""
        other = (triple[0], triple[1] + "-1", triple[2])
        first = cancellation_workflow_id(*triple)
        second = cancellation_workflow_id(*other)
        assert f"{first}-r{n}" != f"{second}-r{m}"
        assert f"{first}:restock:i-1" != f"{second}:restock:i"

    @pytest.mark.parametrize("bad", ["", "a~b", "~"])
    def test_an_id_holding_the_separator_is_refused(self, bad) -> None:
        with pytest.raises(ValueError):
            cancellation_workflow_id(bad, "order", 1)

    def test_a_release_1_id_is_not_parsed_as_a_new_one(self) -> None:
        assert parse_cancellation_id("cancellation-acc-a-1-1") is None
