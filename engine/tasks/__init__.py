"""Command tasks. Importing this package registers them all with the broker."""

from engine.tasks import diagnostics

__all__ = ["diagnostics"]
