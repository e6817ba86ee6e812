"""ssp_gpu_check: every GPU figure in one prepared run that writes one JSON file and a table.

Run it on a CUDA machine as ``bash scripts/gpu_check.sh --out DIR`` (docs/DEPLOYMENT.md, "GPU
check"); ``--cpu --quick`` runs the same code on the CPU at tiny sizes (what CI runs). Parts:

* ``inference``: per preset (``hiera_s`` 736x1280, ``lite`` 384x640, batch 1), precision
  (float32, bfloat16, float16) and mode (eager, ``torch.compile``, CUDA graphs, i.e. the
  options of ``TorchBackend``): image step vs SSP step (alternating order, both ending with
  logits at the network size, as ``ssp_bench`` times them), then ``Stream.process`` end to end
  (preprocess, ORB registration, SSP step, postprocess) and the peak GPU memory;
* ``onnxruntime``: the exported graphs on the CUDA execution provider vs torch float32;
* ``training``: AMP training steps of the SSP task on synthetic data
  (``python -m ssp_training.amp_check`` in a subprocess: ssp_perception never imports
  ssp_training);
* ``registration``: kornia DISK + LightGlue on the GPU vs OpenCV ORB, per frame.

Every part has a time budget (a hard cap: it is interrupted when it runs past it) and the whole
run a time limit; a failing part is recorded with its error and the run goes on. Frames come
from the synthetic moving camera of ``ssp_bench``. Weights are random: speed does not depend on
their values (random DISK + LightGlue weights match nothing, so their success rate means
nothing). GPU times are CUDA-event times (:class:`Clock`, this module is their one home),
reported as medians after warm-up; FPS is 1000 / median milliseconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
import contextlib
from dataclasses import asdict, dataclass, replace
import datetime as dt
import gc
import importlib.util
import json
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import cv2
import numpy as np
import torch

from ..backends import create_backend
from ..classes import CLASS_SETS, ClassSet
from ..config import preset
from ..files import atomic_write_json, atomic_write_text, check_output_target, OUTPUT_MARKER
from ..models import create_model
from ..registration import create_registrator, RegistrationConfig
from ..stream import Segmenter, StreamConfig

from ..synthetic import synthetic_frames

TOOL = "ssp_gpu_check"
SCHEMA_VERSION = 1
JSON_NAME = "gpu_check.json"
TABLE_NAME = "gpu_check.md"
DTYPES = ("float32", "bfloat16", "float16")
MODES = ("eager", "compile", "cuda_graphs")
STATUSES = ("ok", "error", "skipped", "timeout")
KINDS = ("inference", "training", "registration", "onnxruntime")
TARGET_STREAM_FPS = 300.0
"""hiera_s 736x1280 end to end on an H200 in the best mode (issue 19: >= 3x the paper's A100)."""
TARGET_SSP_RATIO = 1.05
"""SSP step / image step in that mode."""
TARGET_PRESET, TARGET_SIZE = "hiera_s", (736, 1280)
WEIGHTS_NOTE = ("random weights: timings only (speed does not depend on the weights' values; "
                "random DISK + LightGlue weights match nothing, so their success rate means "
                "nothing)")
# Loops stop at this share of a part's budget, leaving the rest for what follows the loop.
SOFT_SHARE = 0.8
MIN_PART_S = 5.0


@dataclass(frozen=True)
class CheckConfig:
    """Configure one GPU check (what runs, how long, at which sizes)."""

    device: str = "cuda"
    """Torch device of the models ("cuda" or "cpu")."""
    sizes: tuple[tuple[str, tuple[int, int]], ...] = (("hiera_s", (736, 1280)),
                                                      ("lite", (384, 640)))
    """(preset, network (H, W)) pairs of the inference parts; frames have the same size."""
    kinds: tuple[str, ...] = KINDS
    """Which kinds of part run (see the module docstring)."""
    dtypes: tuple[str, ...] = DTYPES
    """Compute precisions of the inference parts."""
    modes: tuple[str, ...] = MODES
    """Execution modes of the inference parts."""
    warmup: int = 10
    """Untimed iterations first (allocator, cuDNN, compilation, graph capture)."""
    iters: int = 50
    """Timed iterations (steps, stream frames, registrations); fewer if a budget runs out."""
    train_preset: str = "hiera_s"
    """Preset of the training part."""
    train_size: tuple[int, int] = (736, 736)
    """Training crop (H, W): the SSP UAVid recipe's square crops of 736x1280 frames."""
    train_batch: int = 4
    """Training batch size (the SSP UAVid recipe's)."""
    train_steps: int = 100
    """Timed AMP training steps."""
    train_warmup: int = 3
    """Untimed AMP training steps first."""
    part_budget_s: float = 45.0
    """Time budget of each part except compiled inference and training."""
    compile_budget_s: float = 100.0
    """Time budget of a ``torch.compile`` inference part (compilation included)."""
    train_budget_s: float = 90.0
    """Time budget of the training part (its subprocess start included)."""
    time_limit_s: float = 420.0
    """Time limit of the whole run; parts that would start after it are skipped."""
    quick: bool = False
    """CPU smoke mode: skips torch.compile (minutes on a CPU), everything else runs."""
    disk_weights: str = ""
    """DISK checkpoint for the kornia registrator; empty = random weights (timing only)."""
    lightglue_weights: str = ""
    """LightGlue-for-DISK checkpoint; empty = random weights (timing only)."""
    seed: int = 0
    """Seed of the random models and the synthetic camera."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"CheckConfig: {msg}")

        if torch.device(self.device).type not in ("cpu", "cuda"):
            fail(f"device must be cpu or cuda[:N], got {self.device!r}")
        for name, size in self.sizes:
            if len(size) != 2 or min(size) < 1:
                fail(f"size of {name} must be (H, W) with positive sides, got {size!r}")
        bad = ([d for d in self.dtypes if d not in DTYPES]
               + [m for m in self.modes if m not in MODES]
               + [k for k in self.kinds if k not in KINDS])
        if bad:
            fail(f"unknown precisions, modes or parts {bad}; known: {DTYPES}, {MODES} and "
                 f"{KINDS}")
        if min(self.warmup, self.train_batch - 1, self.iters - 1, self.train_steps - 1) < 0:
            fail("need warmup >= 0, iters >= 1, train_batch >= 1 and train_steps >= 1")

    @classmethod
    def quick_cpu(cls, **overrides: Any) -> CheckConfig:
        """Return the CPU smoke configuration: tiny sizes, few iterations, well under a minute."""
        # One preset: the parts run the same code for every preset, and a shared 2-core
        # machine takes seconds per tiny step.
        base = cls(device="cpu", sizes=(("lite", (64, 96)),), warmup=1, iters=2,
                   train_preset="lite", train_size=(64, 64), train_batch=2, train_steps=2,
                   train_warmup=1,
                   part_budget_s=40.0, compile_budget_s=40.0, train_budget_s=90.0,
                   time_limit_s=240.0, quick=True)
        return replace(base, **overrides)


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
        _reset_compiler()
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


def _reset_compiler() -> None:
    # An interrupted compilation may leave dynamo's caches half-filled: start the next clean.
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


# ---- Shared state of one run -------------------------------------------------------------


class Context:
    """Hold what parts share: device, clock, models (built once per preset) and frames."""

    def __init__(self, cfg: CheckConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {cfg.device} requested but CUDA is not available "
                               f"(use --cpu)")
        self.clock = Clock(self.device)
        self.cpu_clock = Clock("cpu")
        self._models: dict[tuple[str, tuple[int, int]], Any] = {}
        self._frames: dict[tuple[int, int], list] = {}

    @property
    def n_frames(self) -> int:
        """Return the iterations of a loop: warm-up plus timed."""
        return self.cfg.warmup + self.cfg.iters

    def model(self, name: str, size: tuple[int, int]) -> Any:
        """Return the random-weight SSP model of preset ``name`` at ``size`` (built once)."""
        key = (name, tuple(size))
        if key not in self._models:
            torch.manual_seed(self.cfg.seed)
            self._models[key] = create_model(preset(name, input_size=tuple(size)))
        return self._models[key]

    def frames(self, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return ``n_frames`` + 1 consecutive synthetic (frame, H) pairs of ``size`` (cached)."""
        key = tuple(size)
        if key not in self._frames:
            self._frames[key] = list(synthetic_frames(key, self.n_frames + 1,
                                                      seed=self.cfg.seed))
        return self._frames[key]


def _class_set(num_classes: int) -> ClassSet:
    found = [c for c in CLASS_SETS.values() if c.num_classes == num_classes]
    if not found:
        raise ValueError(f"no class set has {num_classes} classes")
    return found[0]


def _segmenter(backend: Any, model: Any, size: tuple[int, int]) -> Segmenter:
    cfg = model.cfg
    return Segmenter(backend, _class_set(cfg.num_classes), input_size=tuple(size),
                     mean=cfg.mean, std=cfg.std, upsample_mode=cfg.upsample_mode)


def _peak_memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"peak_allocated_mib": None, "peak_reserved_mib": None}
    return {"peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


# ---- Inference: image step, SSP step, stream ---------------------------------------------


def time_steps(ctx: Context, backend: Any, seg: Segmenter, size: tuple[int, int],
               deadline: float) -> dict[str, Any]:
    """Time the image step and the SSP step of ``backend``, alternating, fed with own state."""
    frames = ctx.frames(size)
    x = seg.normalise(frames[0][0])
    dev = backend.device
    h = torch.as_tensor(frames[1][1], dtype=torch.float32, device=dev).unsqueeze(0)
    ones = torch.ones(1, device=dev)
    logits, feat = backend.image_step(x)
    state = [logits, feat]

    def image() -> Any:
        out = backend.image_step(x)
        seg.network_logits(out[0], size)
        return out

    def ssp() -> Any:
        out = backend.ssp_step(x, state[0], state[1], h, ones)
        seg.network_logits(out[0], size)
        return out

    samples: dict[str, list[float]] = {"image": [], "ssp": []}
    for k in range(ctx.n_frames):
        # Alternating order: neither step always runs with the caches the other left behind.
        for name in (("image", "ssp") if k % 2 == 0 else ("ssp", "image")):
            out, ms = ctx.clock.call(image if name == "image" else ssp)
            if name == "ssp":
                state[:] = [out[0], out[1]]
            if k >= ctx.cfg.warmup:
                samples[name].append(ms)
        if k >= ctx.cfg.warmup and time.monotonic() > deadline:
            break
    result = {**summarise(samples["image"], "image"), **summarise(samples["ssp"], "ssp")}
    result["ssp_over_image"] = (round(result["ssp_ms"] / result["image_ms"], 4)
                                if result["image_ms"] else None)
    return result


def time_stream(ctx: Context, seg: Segmenter, size: tuple[int, int],
                deadline: float) -> dict[str, Any]:
    """Time ``Stream.process`` per frame: preprocess, ORB registration, step, postprocess."""
    stream = seg.new_stream(StreamConfig(input_size=tuple(size)), RegistrationConfig())
    total: list[float] = []
    parts: dict[str, list[float]] = {"registration": [], "model": []}
    used = 0
    for k, (frame, _) in enumerate(ctx.frames(size)[:ctx.n_frames]):
        res, ms = ctx.clock.call(lambda: stream.process(frame, stamp=k / 20.0))
        if k >= ctx.cfg.warmup:
            total.append(ms)
            used += int(res.used_state)
            for key in parts:
                parts[key].append(res.timings_ms[key])
            if time.monotonic() > deadline:
                break
    result = summarise(total, "stream")
    result["stream_fps"] = round(1e3 / result["stream_ms"], 2) if result["stream_ms"] else None
    for key, values in parts.items():
        result[f"stream_{key}_ms"] = round(float(np.median(values)), 4) if values else None
    result["stream_used_state_rate"] = round(used / len(total), 3) if total else None
    result["stream_registration"] = "orb (CPU)"
    return result


def inference_part(ctx: Context, name: str, size: tuple[int, int], dtype: str,
                   mode: str) -> Part:
    """Return the part timing preset ``name`` at ``size`` in ``dtype`` and ``mode``."""
    def run(deadline: float) -> dict[str, Any]:
        dev = ctx.device
        if dtype == "float16" and dev.type != "cuda":
            raise Skip("float16 autocast needs a CUDA device")
        if mode == "cuda_graphs" and dev.type != "cuda":
            raise Skip("CUDA graphs need a CUDA device")
        if mode == "compile" and ctx.cfg.quick:
            raise Skip("torch.compile is not run in --quick mode (on the 2-core build machine "
                       "it compiled lite's two steps in 84 s + 130 s)")
        model = ctx.model(name, size)
        _reset_peak(dev)
        backend = create_backend("torch", model, device=str(dev), dtype=dtype,
                                 compile=mode == "compile", cuda_graphs=mode == "cuda_graphs")
        seg = _segmenter(backend, model, size)
        result = time_steps(ctx, backend, seg, size, deadline)
        result.update(time_stream(ctx, seg, size, deadline))
        result.update(_peak_memory(dev))
        if mode == "compile":
            _reset_compiler()
        return result

    budget = ctx.cfg.compile_budget_s if mode == "compile" else ctx.cfg.part_budget_s
    return Part("inference", f"{name} {size[0]}x{size[1]} {dtype} {mode}",
                {"preset": name, "size": list(size), "dtype": dtype, "mode": mode}, budget, run)


# ---- onnxruntime vs torch --------------------------------------------------------------------


def onnxruntime_part(ctx: Context, name: str, size: tuple[int, int]) -> Part:
    """Return the part timing the exported graphs on onnxruntime against torch float32."""
    def run(deadline: float) -> dict[str, Any]:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise Skip(f"onnxruntime is not installed ({err})") from None
        dev = ctx.device
        providers = ort.get_available_providers()
        if dev.type == "cuda" and "CUDAExecutionProvider" not in providers:
            raise Skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (it has "
                       f"{', '.join(providers)}); onnxruntime-gpu is needed")
        model = ctx.model(name, size)
        result: dict[str, Any] = {"onnxruntime_version": ort.__version__,
                                  "provider": "CUDA" if dev.type == "cuda" else "CPU"}
        with tempfile.TemporaryDirectory(prefix="ssp_gpu_check_onnx_") as cache:
            t0 = time.monotonic()
            ort_backend = create_backend("onnxruntime", model, device=str(dev),
                                         input_size=tuple(size), cache_dir=cache)
            result["export_and_load_s"] = round(time.monotonic() - t0, 2)
            torch_backend = create_backend("torch", model, device=str(dev), dtype="float32")
            half = time.monotonic() + (deadline - time.monotonic()) / 2
            for label, backend, until in (("onnxruntime", ort_backend, half),
                                          ("torch", torch_backend, deadline)):
                steps = time_steps(ctx, backend, _segmenter(backend, model, size), size, until)
                result.update({f"{label}_{k}": v for k, v in steps.items()})
        if result["torch_image_ms"] and result["onnxruntime_image_ms"]:
            result["onnxruntime_over_torch_image"] = round(
                result["onnxruntime_image_ms"] / result["torch_image_ms"], 4)
        return result

    return Part("onnxruntime", f"{name} {size[0]}x{size[1]} onnxruntime vs torch float32",
                {"preset": name, "size": list(size), "dtype": "float32"},
                ctx.cfg.part_budget_s, run)


# ---- AMP training (ssp_training, in a subprocess) --------------------------------------------


def training_part(ctx: Context) -> Part:
    """Return the part that runs ``python -m ssp_training.amp_check`` and reads its JSON."""
    cfg = ctx.cfg
    size = cfg.train_size

    def run(deadline: float) -> dict[str, Any]:
        if importlib.util.find_spec("ssp_training") is None:
            raise Skip("ssp_training is not on the Python path (scripts/gpu_check.sh adds it)")
        cmd = [sys.executable, "-m", "ssp_training.amp_check", "--device", str(ctx.device),
               "--preset", cfg.train_preset, "--size", f"{size[0]}x{size[1]}",
               "--batch", str(cfg.train_batch), "--steps", str(cfg.train_steps),
               "--warmup", str(cfg.train_warmup), "--seed", str(cfg.seed),
               "--time-limit", f"{max(deadline - time.monotonic() - 5.0, 1.0):.1f}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=max(deadline - time.monotonic(), 1.0)
                                  / SOFT_SHARE)
        except subprocess.TimeoutExpired:
            raise Overtime() from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"ssp_training.amp_check exited {proc.returncode}: {tail}")
        # The result is the last line; libraries may print before it.
        return json.loads((proc.stdout.strip().splitlines() or ["{}"])[-1])

    return Part("training", f"{cfg.train_preset} {size[0]}x{size[1]} batch {cfg.train_batch} "
                            f"AMP training", {"preset": cfg.train_preset, "size": list(size),
                                              "batch": cfg.train_batch,
                                              "steps": cfg.train_steps},
                cfg.train_budget_s, run)


# ---- Registration: kornia on the GPU vs ORB ----------------------------------------------


def time_registrator(clock: Clock, registrator: Any, frames: list,
                     warmup: int, deadline: float) -> dict[str, Any]:
    """Time ``register_next`` per frame; return the median and the success rate."""
    samples, ok = [], 0
    for k, (frame, _) in enumerate(frames):
        res, ms = clock.call(lambda: registrator.register_next(frame))
        if k >= max(warmup, 1):  # the first frame has nothing to register against
            samples.append(ms)
            ok += int(res.success)
            if time.monotonic() > deadline:
                break
    result = summarise(samples, "frame")
    result["success_rate"] = round(ok / len(samples), 3) if samples else None
    return result


def _kornia_weights(cfg: CheckConfig, folder: str) -> tuple[str, str, str]:
    """Return (DISK file, LightGlue file, note): the given ones or random ones written here."""
    if cfg.disk_weights and cfg.lightglue_weights:
        return cfg.disk_weights, cfg.lightglue_weights, "given weights"
    import kornia.feature as kf

    torch.manual_seed(cfg.seed)
    disk, lightglue = Path(folder) / "disk_random.pth", Path(folder) / "lightglue_random.pth"
    torch.save(kf.DISK().state_dict(), disk)
    matcher = kf.LightGlue(None, **{**kf.LightGlue.features["disk"], "weights": None})
    torch.save(matcher.state_dict(), lightglue)
    return str(disk), str(lightglue), "random weights (timing only; matches are meaningless)"


def registration_part(ctx: Context, size: tuple[int, int]) -> Part:
    """Return the part timing kornia DISK + LightGlue on the device against ORB on the CPU."""
    def run(deadline: float) -> dict[str, Any]:
        frames = ctx.frames(size)
        base = RegistrationConfig()
        half = time.monotonic() + (deadline - time.monotonic()) / 2
        orb = create_registrator(base)
        result = {f"orb_{k}": v for k, v in time_registrator(
            ctx.cpu_clock, orb, frames, ctx.cfg.warmup, half).items()}
        with tempfile.TemporaryDirectory(prefix="ssp_gpu_check_reg_") as folder:
            disk, lightglue, note = _kornia_weights(ctx.cfg, folder)
            kornia_reg = create_registrator(replace(
                base, method="disk_lightglue", disk_weights=disk, lightglue_weights=lightglue,
                device=str(ctx.device)))
            result.update({f"kornia_{k}": v for k, v in time_registrator(
                ctx.clock, kornia_reg, frames, ctx.cfg.warmup, deadline).items()})
        result.update(kornia_weights=note, working_long_side=base.working_long_side,
                      max_features=base.max_features, kornia_device=str(ctx.device))
        if result["orb_frame_ms"] and result["kornia_frame_ms"]:
            result["kornia_over_orb"] = round(result["kornia_frame_ms"]
                                              / result["orb_frame_ms"], 4)
        return result

    return Part("registration", f"{size[0]}x{size[1]} frames: kornia DISK+LightGlue vs ORB",
                {"size": list(size)}, ctx.cfg.part_budget_s, run)


# ---- Plan, report, table ---------------------------------------------------------------------


def plan(ctx: Context) -> list[Part]:
    """Return the parts in the order they run: the cheap and essential first, compile last."""
    cfg = ctx.cfg
    infer = "inference" in cfg.kinds
    parts = [inference_part(ctx, n, s, d, m) for m in ("eager", "cuda_graphs")
             if infer and m in cfg.modes for n, s in cfg.sizes for d in cfg.dtypes]
    if "training" in cfg.kinds:
        parts.append(training_part(ctx))
    if "registration" in cfg.kinds:
        parts.append(registration_part(ctx, cfg.sizes[0][1]))
    if "onnxruntime" in cfg.kinds:
        parts.extend(onnxruntime_part(ctx, n, s) for n, s in cfg.sizes)
    if infer and "compile" in cfg.modes:
        # Compilation is the slowest: the likely-best precisions first, float32 last.
        order = [d for d in ("bfloat16", "float16", "float32") if d in cfg.dtypes]
        parts.extend(inference_part(ctx, n, s, d, "compile") for d in order
                     for n, s in cfg.sizes)
    return parts


def environment(ctx: Context) -> dict[str, Any]:
    """Describe the machine and the library versions of this run."""
    dev = ctx.device
    env: dict[str, Any] = {
        "device": str(dev), "python": platform.python_version(), "machine": platform.machine(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "opencv": cv2.__version__, "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    for module in ("timm", "kornia", "onnxruntime"):
        with contextlib.suppress(ImportError):
            env[module] = __import__(module).__version__
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(dev)
        env["cudnn"] = torch.backends.cudnn.version()
        env["device_memory_gib"] = round(
            torch.cuda.get_device_properties(dev).total_memory / 2**30, 1)
    return env


def summary(parts: list[dict[str, Any]], cfg: CheckConfig) -> dict[str, Any]:
    """Return the best hiera_s 736x1280 mode and whether it meets issue 19's targets."""
    rows = [p for p in parts if p["kind"] == "inference" and p["status"] == "ok"
            and p["params"]["preset"] == TARGET_PRESET
            and tuple(p["params"]["size"]) == TARGET_SIZE and p["metrics"].get("stream_fps")]
    out: dict[str, Any] = {"target_stream_fps": TARGET_STREAM_FPS,
                           "target_ssp_over_image": TARGET_SSP_RATIO,
                           "targets_apply": cfg.device.startswith("cuda") and not cfg.quick,
                           "best": None, "stream_fps_met": None, "ssp_ratio_met": None}
    if not rows:
        return out
    best = max(rows, key=lambda p: p["metrics"]["stream_fps"])
    m = best["metrics"]
    out["best"] = {"name": best["name"], "stream_fps": m["stream_fps"],
                   "ssp_over_image": m["ssp_over_image"],
                   "image_fps": round(1e3 / m["image_ms"], 2) if m["image_ms"] else None,
                   "ssp_fps": round(1e3 / m["ssp_ms"], 2) if m["ssp_ms"] else None}
    if out["targets_apply"]:
        out["stream_fps_met"] = m["stream_fps"] >= TARGET_STREAM_FPS
        out["ssp_ratio_met"] = (m["ssp_over_image"] is not None
                                and m["ssp_over_image"] <= TARGET_SSP_RATIO)
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _status(p: dict[str, Any]) -> str:
    return p["status"] if p["status"] == "ok" else f"{p['status']}: {p['error']}"


def render_table(report: dict[str, Any]) -> str:
    """Return the markdown tables of a report (one per part kind, then the targets)."""
    env, parts = report["environment"], report["parts"]
    device = env.get("device_name", env["device"])
    lines = [f"GPU check ({report['mode']}) on {device}, torch {env['torch']}, "
             f"{report['started']}; {report['weights']}. Times are medians (CUDA events on "
             f"CUDA), FPS = 1000 / median ms; batch 1.", "",
             "| preset | size | dtype | mode | image ms | SSP ms | SSP/image | stream ms "
             "| stream FPS | registration ms (in stream) | peak MiB | status |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in (p for p in parts if p["kind"] == "inference"):
        q, m = p["params"], p["metrics"]
        lines.append(
            f"| {q['preset']} | {q['size'][0]}x{q['size'][1]} | {q['dtype']} | {q['mode']} "
            f"| {_fmt(m.get('image_ms'))} | {_fmt(m.get('ssp_ms'))} "
            f"| {_fmt(m.get('ssp_over_image'), 3)} | {_fmt(m.get('stream_ms'))} "
            f"| {_fmt(m.get('stream_fps'), 1)} | {_fmt(m.get('stream_registration_ms'))} "
            f"| {_fmt(m.get('peak_allocated_mib'), 0)} | {_status(p)} |")
    lines += ["", "| onnxruntime vs torch float32 | ORT image ms | torch image ms | ORT SSP ms "
              "| torch SSP ms | export + load s | status |", "|---|---:|---:|---:|---:|---:|---|"]
    for p in (p for p in parts if p["kind"] == "onnxruntime"):
        m = p["metrics"]
        lines.append(f"| {p['name']} | {_fmt(m.get('onnxruntime_image_ms'))} "
                     f"| {_fmt(m.get('torch_image_ms'))} | {_fmt(m.get('onnxruntime_ssp_ms'))} "
                     f"| {_fmt(m.get('torch_ssp_ms'))} | {_fmt(m.get('export_and_load_s'))} "
                     f"| {_status(p)} |")
    lines += ["", "| training | AMP | steps | steps/s | median step ms | loss first -> last "
              "| peak MiB | status |", "|---|---|---:|---:|---:|---|---:|---|"]
    for p in (p for p in parts if p["kind"] == "training"):
        m = p["metrics"]
        loss = (f"{_fmt(m.get('loss_first'), 4)} -> {_fmt(m.get('loss_last'), 4)}"
                if m else "-")
        lines.append(f"| {p['name']} | {m.get('amp_dtype', '-')} | {_fmt(m.get('steps'))} "
                     f"| {_fmt(m.get('steps_per_s'))} | {_fmt(m.get('step_ms'))} | {loss} "
                     f"| {_fmt(m.get('peak_allocated_mib'), 0)} | {_status(p)} |")
    lines += ["", "| registration per frame | ORB (CPU) ms | kornia DISK+LightGlue ms "
              "| kornia/ORB | ORB success | kornia weights | status |",
              "|---|---:|---:|---:|---:|---|---|"]
    for p in (p for p in parts if p["kind"] == "registration"):
        m = p["metrics"]
        lines.append(f"| {p['name']} | {_fmt(m.get('orb_frame_ms'))} "
                     f"| {_fmt(m.get('kornia_frame_ms'))} | {_fmt(m.get('kornia_over_orb'), 3)} "
                     f"| {_fmt(m.get('orb_success_rate'), 3)} | {m.get('kornia_weights', '-')} "
                     f"| {_status(p)} |")
    lines += ["", _summary_line(report["summary"])]
    return "\n".join(lines) + "\n"


def _summary_line(s: dict[str, Any]) -> str:
    best = s["best"]
    if best is None:
        return "No hiera_s 736x1280 configuration ran: the targets were not evaluated."
    text = (f"Best hiera_s 736x1280 mode: {best['name']}, {best['stream_fps']} FPS end to end "
            f"(target >= {s['target_stream_fps']:.0f}), SSP/image {best['ssp_over_image']} "
            f"(target <= {s['target_ssp_over_image']}).")
    if not s["targets_apply"]:
        return text + " Targets apply to a CUDA run only: not evaluated."
    met = {True: "met", False: "NOT met"}
    return text + (f" FPS target {met[s['stream_fps_met']]}; ratio target "
                   f"{met[s['ssp_ratio_met']]}.")


def run_check(cfg: CheckConfig, out_dir: Path | None = None,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part of ``cfg``; write the report after each part if ``out_dir`` is given."""
    t0 = time.monotonic()
    ctx = Context(cfg)
    report: dict[str, Any] = {
        "tool": TOOL, "schema_version": SCHEMA_VERSION,
        "mode": ("cpu quick" if cfg.quick else "cpu") if ctx.device.type == "cpu" else "cuda",
        "complete": False, "started": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), "weights": WEIGHTS_NOTE, "config": _config_dict(cfg),
        "environment": environment(ctx), "parts": [], "summary": {}}
    deadline = t0 + cfg.time_limit_s
    parts = plan(ctx)
    for i, part in enumerate(parts, 1):
        progress(f"[{time.monotonic() - t0:6.1f} s] {i}/{len(parts)} {part.kind}: {part.name}")
        record = run_part(part, deadline)
        report["parts"].append(record)
        progress(f"[{time.monotonic() - t0:6.1f} s]   -> {_status(record)} "
                 f"({record['elapsed_s']} s)")
        report["summary"] = summary(report["parts"], cfg)
        report["elapsed_s"] = round(time.monotonic() - t0, 1)
        if out_dir is not None:
            write_report(out_dir, report)
    report["complete"] = True
    if out_dir is not None:
        write_report(out_dir, report)
    return report


def _config_dict(cfg: CheckConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["sizes"] = {name: list(size) for name, size in cfg.sizes}
    return json.loads(json.dumps(d))


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """Write the JSON report and its table into ``out_dir``, each file atomically."""
    atomic_write_json(out_dir / JSON_NAME, report)
    atomic_write_text(out_dir / TABLE_NAME, render_table(report))


def prepare_output(path: str, force: bool) -> Path:
    """Check ``path`` (an earlier output of this tool needs ``force``); create it, marked."""
    out = check_output_target(path, TOOL, force)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / OUTPUT_MARKER, {"tool": TOOL})
    return out


# ---- Command line ----------------------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 384x640, got {text!r}") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"sizes must be multiples of 32 (>= 32), got {text!r}")
    return h, w


def _parse_preset_size(text: str) -> tuple[str, tuple[int, int]]:
    name, sep, size = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected PRESET=HxW, e.g. lite=384x640, got {text!r}")
    return name, _parse_size(size)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the GPU check."""
    p = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (gpu_check.json, gpu_check.md)")
    p.add_argument("--force", action="store_true", help="replace an earlier output of this tool")
    p.add_argument("--cpu", action="store_true", help="run on the CPU instead of CUDA")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few iterations (CI smoke run; needs --cpu)")
    p.add_argument("--size", action="append", type=_parse_preset_size, default=None,
                   metavar="PRESET=HxW", help="inference preset and size (repeatable; default "
                   "hiera_s=736x1280 lite=384x640, or 64x96 with --quick)")
    p.add_argument("--parts", default=",".join(KINDS),
                   help="comma-separated kinds of part to run")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for the whole run (default 420, 240 with --quick)")
    p.add_argument("--disk-weights", default=os.environ.get("SSP_DISK_WEIGHTS", ""),
                   help="DISK checkpoint (default $SSP_DISK_WEIGHTS; empty = random)")
    p.add_argument("--lightglue-weights", default=os.environ.get("SSP_LIGHTGLUE_WEIGHTS", ""),
                   help="LightGlue-for-DISK checkpoint (default $SSP_LIGHTGLUE_WEIGHTS)")
    return p


def config_from_args(args: argparse.Namespace) -> CheckConfig:
    """Return the CheckConfig of parsed arguments."""
    if args.quick and not args.cpu:
        raise ValueError("--quick is the CPU smoke mode: pass --cpu too")
    over: dict[str, Any] = {"disk_weights": args.disk_weights,
                            "lightglue_weights": args.lightglue_weights,
                            "kinds": tuple(k.strip() for k in args.parts.split(",") if k)}
    if args.size:
        over["sizes"] = tuple(args.size)
    if args.time_limit is not None:
        if args.time_limit <= 0:
            raise ValueError(f"--time-limit must be positive, got {args.time_limit}")
        over["time_limit_s"] = args.time_limit
    if args.quick:
        return CheckConfig.quick_cpu(**over)
    return CheckConfig(device="cpu" if args.cpu else "cuda", **over)


def main(argv: list[str] | None = None) -> int:
    """Run the GPU check from the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        out = prepare_output(args.out, args.force)
        print(f"{TOOL}: {WEIGHTS_NOTE}", flush=True)
        report = run_check(cfg, out, progress=lambda line: print(line, flush=True))
    except (ValueError, RuntimeError) as err:
        print(f"{TOOL}: error: {err}", file=sys.stderr)
        return 2
    print(render_table(report), end="")
    print(f"{TOOL}: wrote {out / JSON_NAME} and {out / TABLE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
