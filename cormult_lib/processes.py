"""Worker processes that never outlive the process that started them.

A pool started by ``cormult-extract --workers N`` or ``cormult-sweep --workers N`` is made of
child processes. When the parent is killed with ``SIGKILL`` it cannot stop them, and they would
go on running, re-parented to init, holding memory. :func:`die_with_parent`, called first thing
in each worker, asks the Linux kernel to send the worker ``SIGTERM`` the moment its parent dies
(``prctl(PR_SET_PDEATHSIG)``); on other systems it only checks that the parent is still there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["die_with_parent"]

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Terminate this process (``SIGTERM``) when the process ``parent_pid`` exits.

    Args:
        parent_pid: the parent's pid as the parent saw it (``os.getpid()`` there): if the
            parent died before this call, the worker exits at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent is already gone
        os._exit(1)
