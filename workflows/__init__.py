"""The workflows: ``OrderCancellation`` (one cancellation, from request to closing) and
``BulkCancellation`` (one job cancelling every open order holding a SKU). Orchestration
only: deterministic, no I/O; every side effect is an activity. They may import ``domain``
and the input and result models of ``activities``, nothing else of ours.
"""
