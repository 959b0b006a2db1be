"""A task module that fails at import, for the worker's start-up check."""

BROKEN = 1 / 0
