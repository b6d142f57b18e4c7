"""The edges users touch: the Python client for backend services (``client``), the CLI
(``python -m starter``), the admin hook with the merchants' pages (``http``), the events
relay (``relay``), configuration read once from the environment (``config``), the payload
codec and the provider factory. It may import ``domain``, ``activities`` and ``workflows``;
nothing below it imports it back, and it never imports the tooling in ``tools/``.
"""
