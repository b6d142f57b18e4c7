"""Workflow definitions: orchestration only, deterministic, no I/O."""
