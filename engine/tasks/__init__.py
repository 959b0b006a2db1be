"""Command tasks. Importing this package registers them all with the broker."""

from engine.tasks import diagnostics, psd, workflow

__all__ = ["diagnostics", "psd", "workflow"]
