"""``python -m starter <command>``: the command line (see :mod:`starter.cli`)."""

from starter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
