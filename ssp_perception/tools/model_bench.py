"""Benchmark model presets on this machine and print JSON: ``python -m ssp_perception.models``.

For each preset: parameters, GMACs of the image model and of the similarity block, median
latency of the image model (logits at the input size) and of the SSP step (image model + warps
+ similarity + fusion), batch 1, random weights, on the CPU. Wall time is what a user sees;
CPU time (process time) is steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import preset, PRESETS
from ..models import create_model


def _median_ms(fn, repeats: int) -> tuple[float, float]:
    """Return median (wall ms, CPU ms) of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return (round(sorted(wall)[repeats // 2] * 1e3, 1), round(sorted(cpu)[repeats // 2] * 1e3, 1))


def _gmacs(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return round(counter.get_total_flops() / 2e9, 3)


def bench_preset(name: str, size: tuple[int, int], repeats: int) -> dict:
    """Return parameters, GMACs and latencies of preset ``name`` at ``size`` (H, W)."""
    model = create_model(preset(name, input_size=size)).eval()
    h, w = size
    image = torch.randn(1, 3, h, w)
    hom = torch.tensor([[[1.0, 0.01, 3.0], [-0.01, 1.0, -2.0], [0.0, 0.0, 1.0]]])
    use_prev = torch.ones(1)
    with torch.inference_mode():
        # The state as the model keeps it: logits at the fusion resolution (stride 4 for
        # lite), the similarity block's embedding of the stage-1 feature.
        prev_logits, prev_feat = model.image_step(image)
        image_ms = _median_ms(lambda: model.image_model(image), repeats)
        step_ms = _median_ms(lambda: model.step(image, prev_logits, prev_feat, hom, use_prev),
                             repeats)
        return {
            "params": sum(p.numel() for p in model.parameters()),
            "sim_params": sum(p.numel() for p in model.similarity.parameters()),
            "image_gmacs": _gmacs(lambda: model.image_model(image)),
            "sim_gmacs": _gmacs(lambda: model.similarity(prev_feat, prev_feat)),
            "image_ms": image_ms[0], "step_ms": step_ms[0],
            "image_cpu_ms": image_ms[1], "step_cpu_ms": step_ms[1],
            "step_over_image_cpu": round(step_ms[1] / image_ms[1], 3),
        }


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and print one JSON object per run."""
    parser = argparse.ArgumentParser(prog="python -m ssp_perception.models",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "hiera_s"],
                        choices=sorted(PRESETS), help="presets to measure")
    parser.add_argument("--size", nargs=2, type=int, default=[384, 640], metavar=("H", "W"),
                        help="network input size, multiples of 32")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {name: bench_preset(name, tuple(args.size), args.repeats) for name in args.presets}
    print(json.dumps({"size": args.size, "threads": args.threads, "torch": torch.__version__,
                      "presets": results}))


if __name__ == "__main__":
    main()
