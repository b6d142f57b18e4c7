"""The vocabulary of order cancellations and the rules that govern them (``docs/rules.md``).

Pure code only: pydantic models, enums and functions. Nothing here imports ``temporalio``,
does I/O or imports another package of ours, so workflows, activities and the client all
share it.
"""
