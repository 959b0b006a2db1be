"""A child process that dies with its parent, even when the parent is SIGKILLed (Linux).

The worker processes of ``onemanage worker`` and the console's own worker would
otherwise go on pulling tasks with nobody to stop them (issue 12). Linux sends
the child SIGTERM when its parent exits (PR_SET_PDEATHSIG), so it drains as on
any SIGTERM. Elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal

PR_SET_PDEATHSIG = 1


def terminate_with_parent(parent: int | None = None) -> None:
    """Ask for SIGTERM when the parent exits; ``parent``: its pid, if already known.

    A parent that died before the request leaves it unanswered, so a child
    whose parent is no longer ``parent`` terminates itself at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
