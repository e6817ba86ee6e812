"""ssp_bench: latency, parameters and memory of the image model, SSP step and registration.

Frames are synthetic: a procedurally textured canvas seen by a camera that moves smoothly
(rotation, translation, zoom, a little perspective), so registration does real work and every
frame-to-frame homography is known.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
import json
import os
from pathlib import Path
import platform
import resource
import sys
import time
from typing import Any

import cv2
import numpy as np
import psutil
import torch

from ..artifact import load_artifact
from ..backends import create_backend
from ..classes import CLASS_SETS, ClassSet
from ..cli import ArgumentParser, entry, non_negative_int, run_main, UsageError
from ..config import preset
from ..files import atomic_write_json, check_report_file, OutputError, report_document
from ..geometry import rescale_homography
from ..models import create_model
from ..progress import progress_bar
from ..registration import create_registrator, RegistrationConfig
from ..stream import Segmenter, StreamConfig
from ..synthetic import synthetic_frames


# ---- Benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """Configure one ssp_bench run (mirrors the command-line flags)."""

    preset: str = "lite"
    """Model preset (ignored for the architecture when ``checkpoint`` is given)."""
    size: tuple[int, int] | None = None
    """Network input (H, W), multiples of 32; None = the preset's or checkpoint's."""
    frame_size: tuple[int, int] | None = None
    """Camera frame (H, W) fed to registration and the stream; None = ``size``."""
    frames: int = 100
    """Timed frames (after warm-up)."""
    warmup: int = 10
    """Untimed frames first (allocator, oneDNN primitive and cuDNN caches)."""
    device: str = "cpu"
    """Torch device."""
    dtype: str = "float32"
    """Compute precision: float32, float16 (CUDA) or bfloat16."""
    checkpoint: str = ""
    """Artifact path; empty = a randomly initialised model of ``preset``."""
    backend: str = "torch"
    """Backend name (see ssp_perception.backends.BACKENDS)."""
    threads: int = 0
    """torch and OpenCV CPU threads; 0 = leave the libraries' defaults."""
    registration: str = "orb"
    """Registration method."""
    seed: int = 0
    """Seed of the random model and the synthetic texture."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"BenchConfig: {msg}")

        for name in ("size", "frame_size"):
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or min(v) < 8):
                fail(f"{name} must be (H, W) with sides >= 8, got {v!r}")
        if self.size is not None and any(v % 32 for v in self.size):
            fail(f"size must be multiples of 32 (the network input), got {self.size!r}")
        if self.frames < 1 or self.warmup < 0 or self.threads < 0:
            fail(f"need frames >= 1, warmup >= 0, threads >= 0; got {self.frames}, "
                 f"{self.warmup}, {self.threads}")


def run_benchmark(cfg: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Time the image step, SSP step, registration and the full stream; return a JSON dict.

    Per frame, in this order: the image step; registration followed by the SSP step fed with
    its own previous output and the homography just estimated (``ssp_ms`` times the network
    step alone, ``ssp_with_registration_ms`` both); then ``Stream.process`` end to end.
    Both network spans end with logits at the network input size, as the image model's forward
    does (spec §1.1): for models that fuse at stride 4 (lite) that final upsampling is the same
    ``Segmenter.network_logits`` call in both.
    Interleaving keeps the compared numbers exposed to the same machine load. Each timing is
    reported as the wall-clock median and p90 and the median process CPU time (``_cpu_ms``,
    see ``_now``). Memory growth is the resident set (CUDA: allocated memory) after the run
    minus after warm-up (and after half of the timed frames, which excludes allocator warm-up).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        cv2.setNumThreads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, class_set = _load_model(cfg)
    size = cfg.size or tuple(model.cfg.input_size)
    frame_size = cfg.frame_size or size
    source = cfg.checkpoint or model
    # Exported runtimes build static-shape graphs: tell them the size; torch takes any.
    extra = {} if cfg.backend == "torch" else {"input_size": size}
    backend = create_backend(cfg.backend, source, device=cfg.device, dtype=cfg.dtype, **extra)
    seg = Segmenter(backend, class_set, input_size=size, mean=model.cfg.mean, std=model.cfg.std)
    reg_cfg = RegistrationConfig(method=cfg.registration)
    registrator = create_registrator(reg_cfg)
    stream = seg.new_stream(StreamConfig(input_size=size), reg_cfg)
    dev = backend.device
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)

    wall: dict[str, list[float]] = {k: [] for k in _TIMED}
    cpu: dict[str, list[float]] = {k: [] for k in _TIMED}
    reg_ok = 0
    state = None
    spans: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    mem_start = mem_half = 0.0
    total = cfg.warmup + cfg.frames
    bar = progress_bar(total=total, desc="ssp_bench", disable=not progress, unit="frame")
    try:
        for k, (frame, _) in enumerate(synthetic_frames(frame_size, total, seed=cfg.seed)):
            if k == cfg.warmup:
                mem_start = _memory_mb(dev)
            if k == cfg.warmup + cfg.frames // 2:
                mem_half = _memory_mb(dev)
            x = seg.normalise(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA))
            t0 = _now()
            reg = registrator.register_next(frame)
            t1 = _now()
            h = rescale_homography(reg.homography, frame_size, size)
            h_t = torch.as_tensor(h, dtype=torch.float32, device=dev).unsqueeze(0)
            # Both network steps end with logits at the network input size, as the image model's
            # forward does (spec §1.1): models that fuse at stride 4 upsample there, in both. Their
            # order alternates per frame, so neither always runs with the caches that registration
            # (or the other step) left behind.
            order = (("image_model", "ssp") if k % 2 == 0 or state is None
                     else ("ssp", "image_model"))
            for name in order:
                t_a = _now()
                if name == "image_model":
                    logits, feat = backend.image_step(x)
                    seg.network_logits(logits, size)
                    if state is None:  # first frame: the SSP step's initial state
                        state = (logits, feat)
                else:
                    out, state_feat, _ = backend.ssp_step(x, state[0], state[1], h_t,
                                                          torch.ones(1, device=dev))
                    seg.network_logits(out, size)
                backend.synchronize()
                spans[name] = (t_a, _now())
            state = (out, state_feat)
            if k == 0:
                _check_finite(cfg, logits, out)
            t3 = _now()
            stream.process(frame, stamp=k / 20.0)
            t4 = _now()
            if k >= cfg.warmup:
                spans.update(registration=(t0, t1), stream=(t3, t4))
                for key, (a, b) in spans.items():
                    wall[key].append((b[0] - a[0]) * 1e3)
                    cpu[key].append((b[1] - a[1]) * 1e3)
                wall["ssp_with_registration"].append(wall["registration"][-1] + wall["ssp"][-1])
                cpu["ssp_with_registration"].append(cpu["registration"][-1] + cpu["ssp"][-1])
                reg_ok += int(reg.success)
            bar.update()
    finally:
        bar.close()   # an interrupted line then starts on its own line
    mem_end = _memory_mb(dev)

    report: dict[str, Any] = {}
    for key in _TIMED:
        report[f"{key}_ms"] = float(np.median(wall[key]))
        report[f"{key}_p90_ms"] = float(np.percentile(wall[key], 90))
        report[f"{key}_cpu_ms"] = float(np.median(cpu[key]))
    report["ssp_over_image_cpu_ratio"] = report["ssp_cpu_ms"] / report["image_model_cpu_ms"]
    report["ssp_over_image_ratio"] = report["ssp_ms"] / report["image_model_ms"]
    report["image_model_params"] = _count(model.image_model)
    report["ssp_params"] = _count(model)
    report["peak_memory_mb"] = (torch.cuda.max_memory_allocated(dev) / 2**20 if cuda
                                else _peak_rss_mb())
    report["memory_growth_mb"] = mem_end - mem_start
    report["memory_growth_second_half_mb"] = mem_end - mem_half
    report["memory_kind"] = "cuda_allocated" if cuda else "process_rss"
    report["state_mb"] = sum(t.numel() * t.element_size() for t in state) / 2**20
    report["registration_success_rate"] = reg_ok / cfg.frames
    report.update(_environment(cfg, size, frame_size, backend))
    return report


TOOL = "ssp_bench"
_TIMED = ("image_model", "registration", "ssp", "ssp_with_registration", "stream")


def _now() -> tuple[float, float]:
    """Return (wall clock, process CPU time) in seconds.

    CPU time is what the work itself cost: on a machine shared with other jobs it does not
    grow while the process waits for a core, so it compares variants more robustly than wall
    time. With several threads it also counts their spinning, so compare it at --threads 1.
    """
    return time.perf_counter(), time.process_time()


def _load_model(cfg: BenchConfig):
    if cfg.checkpoint:
        model, meta = load_artifact(cfg.checkpoint)
        return model, meta.class_set
    mcfg = preset(cfg.preset, **({"input_size": cfg.size} if cfg.size else {}))
    # The class set only names outputs; pick the one whose size matches the preset.
    class_set = next((c for c in CLASS_SETS.values() if c.num_classes == mcfg.num_classes),
                     None) or ClassSet("bench", tuple(f"c{i}" for i in range(mcfg.num_classes)),
                                       tuple((i, i, i) for i in range(mcfg.num_classes)))
    return create_model(mcfg), class_set


def _check_finite(cfg: BenchConfig, *outputs: torch.Tensor) -> None:
    """Refuse to time a model whose first outputs hold NaN or inf (broken weights)."""
    if not all(bool(torch.isfinite(t).all()) for t in outputs):
        what = cfg.checkpoint or f"preset {cfg.preset}"
        raise ValueError(f"{what}: the model's outputs on the first frame are not finite (NaN "
                         "or inf); timings of it would not describe a working model (check "
                         "the checkpoint's weights)")


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(cfg: BenchConfig, size, frame_size, backend) -> dict[str, Any]:
    dev = backend.device
    return {
        "preset": cfg.preset if not cfg.checkpoint else "checkpoint",
        "checkpoint": cfg.checkpoint or None, "backend": backend.name,
        "size": list(size), "frame_size": list(frame_size), "frames": cfg.frames,
        "warmup": cfg.warmup, "registration_method": cfg.registration,
        "machine": platform.machine(), "platform": platform.platform(), "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "dtype": cfg.dtype, "torch_version": torch.__version__,
        "opencv_version": cv2.__version__, "python_version": platform.python_version(),
    }


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 384x640, got {text!r}") from None
    return h, w


def build_parser() -> ArgumentParser:
    """Return the command-line parser of ssp_bench."""
    p = ArgumentParser(
        prog="ssp_bench", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="lite", help="model preset (random weights)")
    p.add_argument("--checkpoint", default="", help="artifact to benchmark instead of a preset")
    p.add_argument("--size", type=_parse_size, default=None,
                   help="network input HxW, multiples of 32 (default: the model's)")
    p.add_argument("--frame-size", type=_parse_size, default=None,
                   help="camera frame HxW for registration and the stream (default: --size)")
    p.add_argument("--frames", type=int, default=100, help="timed frames")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up frames")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", default="float32", help="float32, float16 (CUDA) or bfloat16")
    p.add_argument("--backend", default="torch", help="backend name")
    p.add_argument("--threads", type=int, default=0,
                   help="torch/OpenCV CPU threads (0 = library default)")
    p.add_argument("--registration", default="orb", help="registration method")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of model init and texture (an integer >= 0)")
    p.add_argument("--node", action="store_true",
                   help="also measure the ROS node's overhead "
                        "(ssp_perception.ros.node_bench.benchmark_node_overhead)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", default="", help="write the results to this JSON file")
    return p


def check_json_target(path: str) -> Path | None:
    """Return ``--json``'s path, refused (UsageError) before any work when it cannot be written.

    A folder, a non-folder parent or an existing file that is not an earlier ``ssp_bench``
    report (:func:`ssp_perception.files.check_report_file`) cannot take the report.
    """
    if not path:
        return None
    try:
        return check_report_file(path, TOOL, legacy=_legacy_report)
    except OutputError as err:
        raise UsageError(str(err)) from None


def _legacy_report(doc: dict) -> bool:
    """Recognise a report written before reports named their tool (every kind has these)."""
    return {"machine", "cpu_count"} <= doc.keys()


def _write_report(target: Path | None, report: dict[str, Any]) -> None:
    report = report_document(TOOL, report)
    print(json.dumps(report, indent=2, sort_keys=True))
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, report)


NODE_COMMANDS = ("node-overhead", "node-overload")


def build_node_parser(command: str) -> ArgumentParser:
    """Return the parser of ``ssp_bench node-overhead`` / ``ssp_bench node-overload``."""
    overload = command == "node-overload"
    p = ArgumentParser(
        prog=f"ssp_bench {command}",
        description=("latency, memory and frame accounting of ssp_node fed faster than it "
                     "can process" if overload else
                     "per-frame overhead of ssp_node (conversion + all outputs) over the "
                     "segmenter step"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="lite", help="model preset (random weights)")
    p.add_argument("--checkpoint", default="", help="artifact to run instead of a preset")
    p.add_argument("--size", type=_parse_size, default=(360, 640), help="camera frame HxW")
    if overload:
        p.add_argument("--duration", type=float, default=60.0, help="overload seconds")
        p.add_argument("--rate-factor", type=float, default=3.0,
                       help="input rate as a multiple of the node's throughput")
    else:
        p.add_argument("--frames", type=int, default=50, help="timed frames")
        p.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8"),
                       help="encoding of the published frames")
    p.add_argument("--threads", type=int, default=0,
                   help="the node's num_threads parameter (0 = torch default)")
    p.add_argument("--json", default="", help="write the results to this JSON file")
    return p


def node_main(command: str, argv: list[str]) -> int:
    """Run one node benchmark (``ssp_perception.ros.node_bench``); print its JSON."""
    args = build_node_parser(command).parse_args(argv)
    target = check_json_target(args.json)
    try:
        from ..ros import node_bench
    except ImportError as err:
        raise UsageError(f"{command} needs ROS 2 (ssp_perception.ros.node_bench): "
                         f"{err}") from None
    params = {"num_threads": args.threads} if args.threads else None
    checkpoint = args.checkpoint or None
    if command == "node-overload":
        report = node_bench.benchmark_node_overload(
            preset=args.preset, size=args.size, duration_s=args.duration,
            rate_factor=args.rate_factor, checkpoint=checkpoint, node_params=params)
    else:
        report = node_bench.benchmark_node_overhead(
            preset=args.preset, size=args.size, frames=args.frames, checkpoint=checkpoint,
            encoding=args.encoding, node_params=params)
    _write_report(target, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ssp_bench from the command line; print the JSON and optionally write it.

    Bad options exit 2 with one line; Ctrl-C 130 and SIGTERM 143 (:mod:`ssp_perception.cli`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in NODE_COMMANDS:
        return run_main(lambda: node_main(argv[0], argv[1:]), TOOL,
                        usage_errors=(ValueError, FileNotFoundError))
    args = build_parser().parse_args(argv)
    return run_main(lambda: _bench(args), TOOL,
                    usage_errors=(ValueError, RuntimeError, FileNotFoundError))


def _bench(args: argparse.Namespace) -> int:
    target = check_json_target(args.json)
    cfg = BenchConfig(preset=args.preset, size=args.size, frame_size=args.frame_size,
                      frames=args.frames, warmup=args.warmup, device=args.device,
                      dtype=args.dtype, checkpoint=args.checkpoint, backend=args.backend,
                      threads=args.threads, registration=args.registration, seed=args.seed)
    report = run_benchmark(cfg, progress=not args.no_progress)
    report["config"] = {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in asdict(cfg).items()}
    if args.node:
        try:
            from ..ros.node_bench import benchmark_node_overhead
        except ImportError as err:
            raise UsageError(f"--node needs ssp_perception.ros.node_bench (ROS 2 and the node "
                             f"module): {err}") from None
        report["node"] = benchmark_node_overhead(
            preset=cfg.preset, size=report["frame_size"], frames=cfg.frames,
            checkpoint=cfg.checkpoint or None)
    _write_report(target, report)
    return 0


if __name__ == "__main__":
    entry("ssp_bench", "ssp_perception.tools.bench")
