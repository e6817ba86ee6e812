"""GPU timing and the part runner of ``ssp_gpu_check``: budgets, hard limits, records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass
import gc
import signal
import threading
import time
from typing import Any

import numpy as np
import torch

STATUSES = ("ok", "error", "skipped", "timeout")
# Loops stop at this share of a part's budget, leaving the rest for what follows the loop.
SOFT_SHARE = 0.8
MIN_PART_S = 5.0


# ---- Timing: the one home of GPU timing ----------------------------------------------------


class Clock:
    """Time calls on one device: CUDA events on CUDA, ``time.perf_counter`` on the CPU.

    Each call is synchronised at its end, so a time is the latency of one batch-1 call
    (launches included), not the throughput of a queue that runs ahead.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def call(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """Return (fn(), its duration in milliseconds)."""
        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            return out, (time.perf_counter() - t0) * 1e3
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return out, float(start.elapsed_time(end))


def summarise(samples: list[float], prefix: str) -> dict[str, float | int | None]:
    """Return ``{prefix}_ms`` (median), ``{prefix}_p90_ms`` and ``{prefix}_n`` of samples."""
    if not samples:
        return {f"{prefix}_ms": None, f"{prefix}_p90_ms": None, f"{prefix}_n": 0}
    return {f"{prefix}_ms": round(float(np.median(samples)), 4),
            f"{prefix}_p90_ms": round(float(np.percentile(samples, 90)), 4),
            f"{prefix}_n": len(samples)}


# ---- Parts and their runner ------------------------------------------------------------------


class Skip(Exception):
    """A part that cannot run here; its message is recorded as the reason."""


class Overtime(BaseException):
    """Raised in a part that ran past its budget (a BaseException: no library swallows it)."""


@dataclass
class Part:
    """One measurement: ``run(soft_deadline) -> metrics``, capped at ``budget_s``."""

    kind: str
    name: str
    params: dict[str, Any]
    budget_s: float
    run: Callable[[float], dict[str, Any]]


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Overtime` in the block once ``seconds`` have passed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Overtime()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(part: Part, run_deadline: float) -> dict[str, Any]:
    """Run one part within its budget and the run's deadline; return its record."""
    start = time.monotonic()
    budget = min(part.budget_s, run_deadline - start)
    record: dict[str, Any] = {"kind": part.kind, "name": part.name, "params": part.params,
                              "budget_s": round(max(budget, 0.0), 1), "status": "ok",
                              "error": "", "metrics": {}}
    if budget < MIN_PART_S:
        record.update(status="skipped", error="the run's time limit was reached before it")
        record["elapsed_s"] = 0.0
        return record
    try:
        with hard_limit(budget):
            record["metrics"] = part.run(start + SOFT_SHARE * budget)
    except Skip as err:
        record.update(status="skipped", error=str(err))
    except Overtime:
        record.update(status="timeout", error=f"ran past its {budget:.0f} s budget and was "
                                              f"interrupted")
        reset_compiler()
    except Exception as err:  # noqa: BLE001 - a failing part is recorded, the run goes on
        record.update(status="error", error=_one_line(err))
    if record["status"] != "skipped":
        _release_memory()
    record["elapsed_s"] = round(time.monotonic() - start, 2)
    return record


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def reset_compiler() -> None:
    """Reset torch.compile's caches (after a compiled or interrupted part)."""
    # An interrupted compilation may leave dynamo's caches half-filled: start the next clean.
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
