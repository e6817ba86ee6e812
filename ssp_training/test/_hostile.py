"""Shared checks of the hostile-input tests: one error line, nothing else touched."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Callable


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Return every path under ``root`` with (mode, size, mtime_ns): what 'untouched' means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def assert_one_error_line(stderr: str, tool: str, *needles: str) -> str:
    """Assert ``stderr`` ends with exactly one ``<tool>...: error:`` line holding ``needles``."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    line = errors[0]
    assert line.startswith(tool), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def console(tool: str, *args: str, **popen: object) -> subprocess.Popen:
    """Start ``tool`` exactly as its console script does (``ssp_training.console``)."""
    code = f"from ssp_training.console import {tool}; {tool}()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_tool(tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``tool`` to the end; return its exit status and output."""
    proc = console(tool, *args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None,
               timeout: float = 300.0) -> None:
    """Poll ``condition`` (a real state: a file, a line, a handler) until it holds."""
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before the condition: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def handlers_installed(pid: int) -> bool:
    """Return True once ``pid`` catches SIGTERM (ssp_perception.cli's handlers are in place)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def ignore_sigint() -> None:
    """``preexec_fn`` giving the child what a background job (``make test &``) inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
