"""One error vocabulary: a run's failure types reach callers as error codes, and nothing of
ours is ever passed off as the caller's invalid_transition."""

import pytest

from domain.errors import ErrorCode, FailureType, as_error_code


@pytest.mark.parametrize("code", list(ErrorCode))
def test_an_error_code_stays_itself(code: ErrorCode) -> None:
    assert as_error_code(code.value) is code


def test_a_database_that_stayed_away_is_database_unavailable() -> None:
    assert as_error_code(FailureType.STORE_FAILED) is ErrorCode.DATABASE_UNAVAILABLE


@pytest.mark.parametrize(
    "failure", [FailureType.STORE_CONSTRAINT, FailureType.PROVIDER_ERROR, "something_new", None]
)
def test_our_own_failures_are_internal_errors_not_invalid_transitions(failure) -> None:
    assert as_error_code(failure) is ErrorCode.INTERNAL_ERROR


def test_failure_types_that_share_a_name_with_an_error_code_mean_the_same() -> None:
    shared = {f.value for f in FailureType} & {c.value for c in ErrorCode}
    assert shared == {"provider_unavailable", "payment_mismatch"}
