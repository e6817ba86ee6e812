"""The measured parts of ``ssp_gpu_check``: inference, onnxruntime, training, registration."""

from __future__ import annotations

from dataclasses import replace
import importlib.util
import json
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from .gpu_check_config import CheckConfig
from .gpu_check_timing import Clock, Overtime, Part, reset_compiler, Skip, SOFT_SHARE, summarise
from ..backends import create_backend
from ..classes import CLASS_SETS, ClassSet
from ..config import preset
from ..models import create_model
from ..registration import create_registrator, RegistrationConfig
from ..stream import Segmenter, StreamConfig
from ..synthetic import synthetic_frames


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
            reset_compiler()
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


# ---- Plan ----------------------------------------------------------------------------------


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
