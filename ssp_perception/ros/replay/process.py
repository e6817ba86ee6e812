"""ssp_node as a child process of the replay, as on a drone: its own process and DDS participant.

The node gets its parameters as a ROS 2 parameter file and its namespace by remapping; the
replay finds its output topics through the ROS graph. Its output is kept (last lines) so that
a node that cannot start is reported by its own one-line reason. It is started through
:mod:`.child`, so it dies with the replay even when the replay is killed (``kill -9``); a later
replay removes the parameter folders such a replay left (:func:`remove_stale_params_dirs`).
"""

from __future__ import annotations

from collections import deque
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import yaml

from .config import ReplayError
from ...files import remove_dead_folders

NODE_NAME = "ssp_node"
_TAIL_LINES = 40
PARAMS_PREFIX = "ssp_replay_params_"
# ssp_replay_params_<pid>_<random>: the pid proves whose folder it is.
_PARAMS_DIR = re.compile(rf"{PARAMS_PREFIX}(\d+)_\w+")
_PARAMS_FILE = re.compile(r"\w+_params\.yaml")


def make_params_dir() -> Path:
    """Create this process's folder for the nodes' parameter files (named by its pid)."""
    return Path(tempfile.mkdtemp(prefix=f"{PARAMS_PREFIX}{os.getpid()}_"))


def remove_stale_params_dirs(root: Path | None = None) -> list[Path]:
    """Remove parameter folders of replays that were killed; return the removed folders.

    Only folders named by :func:`make_params_dir` and holding nothing but node parameter files
    are candidates (:func:`~ssp_perception.files.remove_dead_folders`).
    """
    return remove_dead_folders(
        Path(root or tempfile.gettempdir()), f"{PARAMS_PREFIX}*", _PARAMS_DIR,
        lambda path: all(_PARAMS_FILE.fullmatch(f.name) and f.is_file() for f in path.iterdir()))


class NodeProcess:
    """Start ``python -m ssp_perception.ros.node`` in ``namespace``; stop it on :meth:`stop`."""

    def __init__(self, namespace: str, parameters: dict[str, Any], domain_id: int | None,
                 params_dir: Path) -> None:
        params_file = params_dir / f"{namespace.strip('/') or 'node'}_params.yaml"
        # Flat dotted names ("stream.max_gap_s") are valid keys of a ROS 2 parameter file.
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if domain_id is not None:
            env["ROS_DOMAIN_ID"] = str(domain_id)
        self.namespace = namespace
        self.name = f"{namespace.rstrip('/')}/{NODE_NAME}"
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        # Started from the main thread (the kernel signals the child when the thread that
        # forked it ends), through .child: the node dies with this process.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ssp_perception.ros.replay.child", str(os.getpid()),
             sys.executable, "-m", "ssp_perception.ros.node", "--ros-args",
             "-r", f"__ns:={namespace}", "-r", f"__node:={NODE_NAME}",
             "--params-file", str(params_file)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Drain the pipe so the node never blocks on a full one; keep the tail for errors.
        for line in self._proc.stdout:
            self._tail.append(line.rstrip())

    def check_alive(self) -> None:
        """Raise ReplayError with the node's own reason when its process has exited."""
        code = self._proc.poll()
        if code is None:
            return
        self._reader.join(timeout=5.0)
        fatal = [line for line in self._tail
                 if "cannot start" in line or "FATAL" in line or ": error:" in line]
        reason = fatal[-1] if fatal else "\n".join(list(self._tail)[-10:])
        raise ReplayError(f"ssp_node (its own process) exited with code {code}: {reason}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the node as Ctrl-C does; kill it if it does not exit within ``timeout_s``."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=5.0)
