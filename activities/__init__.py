"""Every side effect of a cancellation: the store database and the payment provider.

Activities are methods of classes that receive their connection pool or HTTP client
in ``__init__``; ``worker.py`` builds each class once.
"""
