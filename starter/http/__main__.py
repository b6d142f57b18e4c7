"""``python -m starter.http``: serve the admin hook on 127.0.0.1:``ADMIN_HOOK_PORT``.

``python -m starter.http --issue-token SHOP_ID`` stores a new token for a shop in the
database (hashed) and prints it once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from starter.config import ConfigError, Settings
from starter.http.server import LOOPBACK, InvalidShopIdError, issue_token, serve


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, read the environment once, and run."""
    parser = argparse.ArgumentParser(prog="python -m starter.http", description=__doc__)
    parser.add_argument(
        "--host",
        default=LOOPBACK,
        help="address to listen on (default %(default)s; 0.0.0.0 behind a proxy)",
    )
    parser.add_argument(
        "--issue-token", metavar="SHOP_ID", help="store a new token for the shop and print it"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
        if args.issue_token:
            print(asyncio.run(issue_token(settings, args.issue_token)))
            return 0
        asyncio.run(serve(settings, host=args.host))
    except (ConfigError, InvalidShopIdError) as error:
        print(f"admin hook: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
