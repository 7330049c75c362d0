"""Child processes that die with their parent.

A child started with ``preexec_fn=die_with_parent`` asks the kernel (Linux ``PR_SET_PDEATHSIG``)
to SIGKILL it when the process that started it dies, even by SIGKILL: a killed supervisor leaves
no orphan workers behind, a killed test run no Redis servers. Here, not in :mod:`conveyor.dev`,
because the supervisor of ``conveyor worker --processes N`` is production code and must not
import from the development tools; those import it from here.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child between fork and exec: be killed when the parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def supervised_child() -> None:
    """Runs in a child of ``conveyor worker --processes N`` between fork and exec: die with the
    supervisor, and ignore SIGINT and SIGTERM, which reach it with the terminal's process group
    or systemd's cgroup too; the supervisor passes its stop orders on through a pipe (see
    :mod:`conveyor.worker.supervisor`). Ignored signals stay ignored across the exec, also while
    the interpreter starts."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
