"""Tooling for the people who build, try and check the product; not part of it.

The dev stack (``devstack``: Temporal, PostgreSQL, the provider sandbox, the worker and the
hook on this machine), its parts (``embedded_postgres``, ``temporal_server``,
``localstripe``, ``ports``), the demo of the store-admin guide's situations (``demo``), the
benchmark (``bench*``) and the chaos run (``chaos*``). They may import the product
(``domain``, ``workflows``, ``activities``, ``starter``, ``provider_sandbox``); nothing in the
product imports them, and the wheel built from ``pyproject.toml`` leaves them out
(``tests/test_layout.py`` checks both). ``python -m starter dev|demo|bench|chaos`` runs
them from a source checkout.
"""
