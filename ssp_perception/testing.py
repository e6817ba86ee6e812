"""Test helpers for both packages' tool tests: run a console script as a user does, watch it.

The hostile-input and signal tests of every tool (``ssp_node ssp_replay ssp_bench ssp_data
ssp_train ssp_eval ssp_export``) share these checks: one error line, nothing else touched,
and waits on real conditions (a line in the output, a file, the signal handlers in place),
never bare sleeps. Standard library only; nothing here runs in the product.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Return every path under ``root`` with (mode, size, mtime_ns): what 'untouched' means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def assert_one_error_line(stderr: str, tool: str, *needles: str) -> str:
    """Assert ``stderr`` ends with exactly one ``<tool>: error:`` line holding ``needles``."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    line = errors[0]
    assert line.startswith(tool) and ": error: " in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


ROS_TOOLS = ("ssp_node", "ssp_replay", "ssp_bench")


def console_code(tool: str) -> str:
    """Return the ``python -c`` code that runs ``tool`` exactly as its console script does."""
    package = "ssp_perception" if tool in ROS_TOOLS else "ssp_training"
    return f"from {package}.console import {tool}; {tool}()"


def console(tool: str, *args: str, **popen: object) -> subprocess.Popen:
    """Start ``tool`` as its console script, with text stdout and stderr pipes."""
    # faulthandler: a crash of the tool shows its Python stack in the test's failure output.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-c", console_code(tool), *args], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


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


def spin_until(executor: Any, predicate: Callable[[], Any], timeout: float,
               proc: subprocess.Popen | None = None, period: float = 0.05) -> Any:
    """Spin an rclpy ``executor`` until ``predicate()`` holds; return its last value.

    Stops early when ``proc`` (a node process under test) exits: the caller asserts on it.
    """
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=period)
        if proc is not None and proc.poll() is not None:
            break
    return predicate()


def ignore_sigint() -> None:
    """``preexec_fn`` giving the child what a background job (``make test &``) inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Tool:
    """One tool process, started as its console script; its output is collected as it comes."""

    def __init__(self, tool: str, *args: str, background: bool = False,
                 cwd: Path | None = None, domain_id: int | None = None) -> None:
        code = console_code(tool)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONFAULTHANDLER": "1"}
        if domain_id is not None:
            env["ROS_DOMAIN_ID"] = str(domain_id)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=ignore_sigint if background else None)
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Raw reads: progress bars write "\r" without newlines, and a line reader would wait.
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    @property
    def output(self) -> str:
        """Return everything the tool wrote so far (stdout and stderr)."""
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def wait_until(self, condition: Callable[[], bool], what: str,
                   timeout: float = 300.0) -> None:
        """Poll ``condition`` until it holds; fail if the tool ends first or time runs out."""
        end = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"{what}: the tool ended ({self.proc.returncode}) "
                                     f"first:\n{self.output[-3000:]}")
            assert time.monotonic() < end, f"{what}: not reached:\n{self.output[-3000:]}"
            time.sleep(0.01)

    def wait_output(self, text: str, timeout: float = 300.0) -> None:
        """Wait until the tool printed ``text``."""
        self.wait_until(lambda: text in self.output, f"output {text!r}", timeout)

    def wait_handlers(self) -> None:
        """Wait until the tool catches SIGTERM (ssp_perception.cli's handlers are in place)."""
        self.wait_until(lambda: handlers_installed(self.proc.pid), "signal handlers", 60.0)

    def finish(self, timeout: float = 120.0) -> tuple[int, str]:
        """Wait for the exit; return (status, output). Kill the process if it hangs."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10.0)
        return self.proc.returncode, self.output

    def signal(self, sig: int) -> tuple[int, str]:
        """Send ``sig`` and wait for the exit; return (status, output)."""
        self.proc.send_signal(sig)
        return self.finish()


def handlers_installed(pid: int) -> bool:
    """Return True once ``pid`` catches SIGTERM (ssp_perception.cli's handlers are in place)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except FileNotFoundError:
        return False
    return False


def run_tool(tool: str, *args: str, timeout: float = 300.0, **kw: object) -> tuple[int, str]:
    """Run ``tool`` to its end; return (status, output)."""
    return Tool(tool, *args, **kw).finish(timeout)
