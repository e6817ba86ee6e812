"""On-disk cache of ONNX exports and TensorRT engines, keyed so that stale entries rebuild.

A serialized TensorRT engine is valid for exactly one GPU model, one TensorRT version, one
network (artifact) and one input shape and precision; an ONNX export is valid for one artifact,
graph, shape and opset. :class:`CacheKey` holds all of these, and the file name is a digest of
the whole key, so anything that changes simply misses the cache and the caller builds a fresh
file instead of loading one that would fail (or, worse, load and compute the wrong thing).
Each entry has a JSON sidecar with the full key: it lets a human see what an engine was built
for, and guards against a truncated or foreign file under the right name.

ROS-free and TensorRT-free: this module only moves bytes, so it is tested on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes

PRECISIONS = ("fp32", "fp16", "int8")
CACHE_ENV = "SSP_ENGINE_CACHE"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class CacheKey:
    """Identify one compiled file: every input whose change makes a cached build invalid."""

    kind: str
    """What is cached: "onnx" (an export) or "tensorrt" (a serialized engine)."""
    graph: str
    """Which network graph: "image" (image model step) or "ssp" (SSP step with state)."""
    source_sha256: str
    """SHA-256 of the artifact or ONNX file the entry is built from (see :func:`file_sha256`)."""
    input_size: tuple[int, int]
    """Network input (H, W) the entry is specialised for."""
    precision: str = "fp32"
    """Arithmetic precision: "fp32", "fp16" or "int8"."""
    device: str = "any"
    """Hardware the entry is valid on, e.g. "NVIDIA H100 80GB HBM3 (sm_90)"; "any" if portable."""
    runtime: str = ""
    """Producer version, e.g. "tensorrt 10.9.0" or "torch 2.15.0 opset 17"."""
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """Further (name, value) facts that change the build, e.g. the INT8 calibration data digest."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        object.__setattr__(self, "extra", tuple(sorted((str(k), str(v)) for k, v in self.extra)))
        if self.kind not in ("onnx", "tensorrt"):
            raise ValueError(f"CacheKey.kind must be 'onnx' or 'tensorrt', got {self.kind!r}")
        if self.graph not in ("image", "ssp"):
            raise ValueError(f"CacheKey.graph must be 'image' or 'ssp', got {self.graph!r}")
        if len(self.source_sha256) != 64 or any(c not in "0123456789abcdef"
                                                for c in self.source_sha256):
            raise ValueError("CacheKey.source_sha256 must be a 64-digit lower-case hex SHA-256, "
                             f"got {self.source_sha256!r}")
        if (len(self.input_size) != 2
                or not all(isinstance(v, int) and v > 0 for v in self.input_size)):
            raise ValueError(f"CacheKey.input_size must be (H, W) positive ints, "
                             f"got {self.input_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"CacheKey.precision {self.precision!r} is not one of "
                             f"{', '.join(PRECISIONS)}")

    def to_dict(self) -> dict[str, Any]:
        """Return the key as plain JSON (the sidecar content)."""
        return {"kind": self.kind, "graph": self.graph, "source_sha256": self.source_sha256,
                "input_size": list(self.input_size), "precision": self.precision,
                "device": self.device, "runtime": self.runtime,
                "extra": [list(kv) for kv in self.extra]}

    def digest(self) -> str:
        """Return a short stable hex digest of the whole key (the cache file stem)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def file_name(self) -> str:
        """Return the cache file name: readable prefix, then the digest, then the suffix."""
        h, w = self.input_size
        suffix = ".onnx" if self.kind == "onnx" else ".engine"
        return f"{self.graph}_{h}x{w}_{self.precision}_{self.digest()}{suffix}"


def default_cache_dir() -> Path:
    """Return ``$SSP_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/ssp_perception``, else ~/.cache/..."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ssp_perception"


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` durably (fsync) and atomically to ``path``, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, payload, durable=True)


class EngineCache:
    """Hold compiled files named by :meth:`CacheKey.file_name`, each with a JSON sidecar."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        """Use ``root`` (created on first write), or :func:`default_cache_dir` when None."""
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def path_for(self, key: CacheKey) -> Path:
        """Return where the entry for ``key`` lives (it may not exist)."""
        return self.root / key.file_name()

    def _sidecar(self, key: CacheKey) -> Path:
        return self.path_for(key).with_suffix(".json")

    def lookup(self, key: CacheKey) -> Path | None:
        """Return the path of the entry if it exists and its sidecar holds ``key``; else None."""
        path, sidecar = self.path_for(key), self._sidecar(key)
        if not path.is_file() or not sidecar.is_file():
            return None
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        return path if recorded == key.to_dict() else None

    def store(self, key: CacheKey, payload: bytes) -> Path:
        """Write ``payload`` for ``key`` atomically (payload first, then the sidecar)."""
        path = write_atomic(self.path_for(key), payload)
        write_atomic(self._sidecar(key), (json.dumps(key.to_dict(), indent=2) + "\n").encode())
        return path

    def evict(self, key: CacheKey) -> None:
        """Remove the entry for ``key`` (a no-op if it is not there)."""
        self._sidecar(key).unlink(missing_ok=True)
        self.path_for(key).unlink(missing_ok=True)

    def get_or_build(self, key: CacheKey, build: Callable[[], bytes]) -> tuple[Path, bool]:
        """Return ``(path, built)``: the cached entry for ``key``, or a fresh one from ``build()``.

        An exclusive lock file serialises builders of one key, so two processes starting
        together (two nodes, or a node and ``ssp_export``) build an engine once and the second
        reuses it. A failing ``build()`` leaves no entry behind.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.path_for(key).with_suffix(".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = self.lookup(key)
                if path is not None:
                    return path, False
                self.evict(key)  # a payload without a valid sidecar is a half-written entry
                return self.store(key, build()), True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


__all__ = ["CACHE_ENV", "CacheKey", "EngineCache", "PRECISIONS", "default_cache_dir",
           "file_sha256", "write_atomic"]
