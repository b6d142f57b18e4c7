"""The usage lines name the command the user typed: the console script or the module."""

import pytest

from starter.cli_parser import build_parser


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/usr/local/bin/order-cancellations", "order-cancellations"),
        ("/repo/starter/__main__.py", "python -m starter"),
    ],
)
def test_usage_names_how_the_cli_was_called(
    monkeypatch: pytest.MonkeyPatch, argv0: str, prog: str
) -> None:
    monkeypatch.setattr("sys.argv", [argv0, "status"])

    assert build_parser().format_usage().startswith(f"usage: {prog} ")
