"""Run a command that dies with the process that started it: ``python -m ...child PID CMD...``.

The replay starts ssp_node through this module. On Linux it asks the kernel to send the
command SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, kept across ``execve``),
checks that the parent ``PID`` is still its parent (it may have died before the request), and
then becomes the command (``os.execv``: same process id, nothing left of this module). So a
replay killed with ``kill -9`` takes its node with it instead of leaving it running for ever.

Why not ``subprocess.Popen(preexec_fn=...)``: Python code between ``fork`` and ``exec`` is
unsafe in a process with threads (the replay has several). The kernel sends the signal when
the *thread* that forked exits; the replay starts its nodes from the main thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1   # <linux/prctl.h>
EXIT_ORPHAN = 128 + signal.SIGTERM   # what the signal would have caused


def die_with_parent(parent: int) -> bool:
    """Ask for SIGTERM when the parent dies; return False if ``parent`` is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent


def main(argv: list[str]) -> int:
    """Arrange to die with ``argv[0]`` (a pid), then exec ``argv[1:]``; return only on error."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m ssp_perception.ros.replay.child PARENT_PID COMMAND [ARG...]",
              file=sys.stderr)
        return 2
    if not die_with_parent(int(argv[0])):
        return EXIT_ORPHAN
    os.execv(argv[1], argv[1:])
    return 1   # not reached: execv raises OSError or does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
