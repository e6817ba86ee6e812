r"""Compare backends and precisions side by side: latency (interleaved) and agreement, as JSON.

``ssp_bench`` measures one backend per run. On a shared or thermally throttling machine two
separate runs see different loads, so this tool builds every candidate in one process and
times them **interleaved**, frame by frame: the image step, the SSP step (fed with its own
state and the frame's true homography) and ``Stream.process`` end to end (ORB registration,
pre/post-processing). It reports wall and process-CPU medians and p90s, and each candidate's
agreement with the first one (``parity.compare_backends``)::

    python -m ssp_perception.tools.compare_backends --size 384x640 --threads 1 \\
        torch:float32 onnxruntime:float32
    python -m ssp_perception.tools.compare_backends --checkpoint model.safetensors --device cuda \\
        torch:float32 torch:float16 onnxruntime:float32 tensorrt:float16 tensorrt:int8

Process CPU time counts every thread, so with one thread it is the work done, unaffected by
other processes; with more threads it also counts spin-waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

from ..backends import create_backend
from ..backends.parity import compare_backends, normalise_frame
from ..synthetic import synthetic_frames

STEPS = ("image", "ssp", "stream")


def parse_candidate(text: str) -> tuple[str, str]:
    """Return (backend, dtype) from "backend:dtype" (dtype defaults to float32)."""
    backend, _, dtype = text.partition(":")
    if not backend:
        raise argparse.ArgumentTypeError(f"expected backend[:dtype], got {text!r}")
    return backend, dtype or "float32"


def compare(candidates: list[tuple[str, str]], preset_name: str = "lite",
            checkpoint: str = "", size: tuple[int, int] | None = None, device: str = "cpu",
            threads: int = 0, frames: int = 20, warmup: int = 3,
            cache_dir: str | None = None, model: Any = None) -> dict[str, Any]:
    """Time ``candidates`` interleaved on the same frames; return the JSON report.

    The model is ``model`` (an in-memory ``SSPModel``), else ``checkpoint``, else a randomly
    initialised ``preset_name``.
    """
    from ..artifact import load_artifact
    from ..classes import CLASS_SETS, ClassSet
    from ..config import preset
    from ..models import create_model
    from ..stream import Segmenter, StreamConfig

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model is None and checkpoint:
        model, meta = load_artifact(checkpoint)
        class_set, source = meta.class_set, checkpoint
    else:
        if model is None:
            model = create_model(preset(preset_name, **({"input_size": size} if size else {})))
        model.eval()
        n = model.cfg.num_classes
        # The class set only names outputs: any set of the right size, else a generic one.
        generic = ClassSet("bench", tuple(f"c{i}" for i in range(n)),
                           tuple((i, i, i) for i in range(n)))
        class_set = next((c for c in CLASS_SETS.values() if c.num_classes == n), generic)
        source = model
    size = tuple(size or model.cfg.input_size)
    cfg = model.cfg
    backends, streams = {}, {}
    for backend, dtype in candidates:
        name = f"{backend}:{dtype}"
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        if backend != "torch":
            kw.update(input_size=size, cache_dir=cache_dir)
        backends[name] = create_backend(backend, source, **kw)
        segmenter = Segmenter(backends[name], class_set, input_size=size, mean=cfg.mean,
                              std=cfg.std)
        streams[name] = segmenter.new_stream(StreamConfig(input_size=size))
    load_before = os.getloadavg()
    times = {n: {f"{s}_{k}": [] for s in STEPS for k in ("wall", "cpu")} for n in backends}
    state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, (frame, homography) in enumerate(synthetic_frames(size, warmup + frames)):
        for name, backend in backends.items():
            x = normalise_frame(frame, cfg.mean, cfg.std, backend.device)
            h = torch.from_numpy(homography).float().unsqueeze(0).to(backend.device)
            use = torch.ones(1, device=backend.device)
            with torch.inference_mode():
                first, *sample_image = _timed(backend, backend.image_step, x)
                prev = state.get(name, first)  # the first frame starts from its own output
                out, *sample_ssp = _timed(backend, backend.ssp_step, x, prev[0], prev[1], h, use)
                state[name] = (out[0], out[1])
            _, *sample_stream = _timed(backend, streams[name].process, frame, k / 20.0)
            sample = {"image": sample_image, "ssp": sample_ssp, "stream": sample_stream}
            if k >= warmup:
                for step, (wall, cpu) in sample.items():
                    times[name][f"{step}_wall"].append(wall)
                    times[name][f"{step}_cpu"].append(cpu)
    reference = next(iter(backends))
    report: dict[str, Any] = {"candidates": {}}
    for name, samples in times.items():
        entry = {}
        for key, values in samples.items():
            entry[f"{key}_ms"] = round(float(np.median(values)), 2)
            entry[f"{key}_p90_ms"] = round(float(np.percentile(values, 90)), 2)
        entry["ssp_over_image"] = round(entry["ssp_wall_ms"] / entry["image_wall_ms"], 3)
        if name != reference:
            parity = compare_backends(backends[reference], backends[name], size, cfg.mean,
                                      cfg.std)
            entry["vs_reference"] = [p.to_dict() for p in parity]
        report["candidates"][name] = entry
    report.update(reference=reference, size=list(size), device=device, frames=frames,
                  warmup=warmup, torch_threads=torch.get_num_threads(),
                  model=checkpoint or f"{model.cfg.preset} (in-memory or random weights)",
                  load_average_before=[round(v, 2) for v in load_before],
                  load_average_after=[round(v, 2) for v in os.getloadavg()],
                  cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
                  torch_version=torch.__version__,
                  gpu=(torch.cuda.get_device_name() if torch.cuda.is_available() else None))
    return report


def _timed(backend: Any, fn: Any, *args: Any) -> tuple[Any, float, float]:
    """Return ``(fn(*args), wall ms, process CPU ms)``, after the backend's queued work."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    backend.synchronize()
    return result, 1e3 * (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 384x640, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """Run the comparison from the command line and print (or write) the JSON report."""
    p = argparse.ArgumentParser(prog="python -m ssp_perception.tools.compare_backends",
                                description=__doc__.split("\n")[0])
    p.add_argument("candidates", nargs="+", type=parse_candidate,
                   help="backend:dtype, e.g. torch:float32 onnxruntime:float32 "
                   "tensorrt:float16 tensorrt:int8; the first is the reference")
    p.add_argument("--preset", default="lite", help="model preset with random weights")
    p.add_argument("--checkpoint", default="", help="artifact instead of a random preset")
    p.add_argument("--size", type=_size, default=None, help="network input HxW")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--frames", type=int, default=20, help="timed frames per candidate")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--cache-dir", default=None, help="ONNX/engine cache directory")
    p.add_argument("--json", default="", help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        report = compare(args.candidates, args.preset, args.checkpoint, args.size, args.device,
                         args.threads, args.frames, args.warmup, args.cache_dir)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        from ..backends.engine_cache import write_atomic
        write_atomic(args.json, (text + "\n").encode())
    return 0


__all__ = ["compare", "main", "parse_candidate"]

if __name__ == "__main__":
    sys.exit(main())
