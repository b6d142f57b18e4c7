"""Every side effect of a cancellation: the store database (asyncpg, versioned SQL
migrations), the payment provider (the sandbox's client and the Stripe adapter) and the
events written with each transition.

Activities are methods of classes that receive their connection pool or HTTP client in
``__init__``; ``worker.py`` builds each class once. They may import ``domain`` only.
"""
