"""Page cursors on the wire: a list's position made opaque and URL-safe (base64url), so a
caller can paste it into a query string as it is, and a tampered one is a clear 422."""

from __future__ import annotations

import base64

from domain.errors import CancellationError, ErrorCode


def wrap(position: str) -> str:
    """The cursor for ``position`` (e.g. ``"<time>|<id>"`` or an order id)."""
    return base64.urlsafe_b64encode(position.encode()).decode()


def unwrap(cursor: str) -> str:
    """The position a cursor of :func:`wrap` holds.

    Raises:
        CancellationError: ``validation_error`` for anything :func:`wrap` did not make
            (not base64url, not UTF-8, empty, or holding a NUL).
    """
    try:
        position = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        position = ""
    if not position or "\x00" in position:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, "cursor is not valid")
    return position
