"""The vocabulary of order cancellations and the rules that govern them.

Pure code only: pydantic models, enums and functions. Nothing here imports
``temporalio`` or does I/O, so workflows, activities and the client all share it.
"""
