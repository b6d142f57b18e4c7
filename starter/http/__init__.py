"""The admin hook: merchants and backend services drive cancellations over HTTP.

A thin layer over :class:`~starter.client.CancellationClient` (``create_app``), served
by uvicorn (``python -m starter.http``). See ``docs/admin-hook.md``.
"""
