"""Page cursors: what wrap makes, unwrap gives back; anything else is a validation error."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import CancellationError, ErrorCode
from starter import cursors


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_a_cursor_gives_back_its_position_and_is_url_safe(position: str) -> None:
    cursor = cursors.wrap(position)

    assert cursors.unwrap(cursor) == position
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


@pytest.mark.parametrize(
    "cursor",
    ["", "not base64!", "%%%", "w6g", cursors.wrap("\x00"), "//8=", "é"],
    ids=["empty", "not-base64", "percent", "bad-padding", "nul", "not-utf8", "not-ascii"],
)
def test_anything_else_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(CancellationError) as refused:
        cursors.unwrap(cursor)

    assert refused.value.code is ErrorCode.VALIDATION_ERROR
    assert refused.value.message == "cursor is not valid"
