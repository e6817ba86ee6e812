"""AMP training steps of the SSP task on synthetic frame pairs: steps/s, peak memory, losses.

The training part of ``python -m ssp_perception.tools.gpu_check``, which runs this module as a
subprocess (ssp_perception never imports ssp_training) and reads the JSON it prints. What is
the trainer's: the model kind ``ssp`` (random init, ``forward_pair``), the loss
(``SupervisedTask``: CE + 0.5 TC, SSP_SPEC §4.4), AdamW with the recipe defaults, autocast plus
a GradScaler for float16, the finite-loss check. What is not: data loading and augmentation (one
fixed batch lives on the device), the flow network (the TC loss gets the exact flow of the
synthetic camera's homography, source "gt"), the schedule and validation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
from ssp_perception.config import preset
from ssp_perception.geometry import transform_points
from ssp_perception.synthetic import synthetic_frames
from ssp_perception.tools.gpu_check_timing import Clock, summarise
import torch

from .data.frames import to_tensor_image
from .model_kinds import get_model_kind
from .recipes import LossRecipe, OptimRecipe
from .tasks import BatchFlow, SupervisedTask


def synthetic_batch(size: tuple[int, int], batch: int, num_classes: int,
                    device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Return a batch of consecutive synthetic frame pairs as the trainer's SSP batches hold.

    ``prev_image``/``image`` (B, 3, H, W) normalised, ``homography`` (B, 3, 3) previous ->
    current, ``flow`` (B, 2, H, W) current -> previous (exact, from the homography) and
    ``label`` (B, H, W): the frame's brightness in ``num_classes`` bands (a learnable target).
    """
    frames = list(synthetic_frames(size, batch + 1, seed=seed))
    hgt, wid = size
    ys, xs = np.mgrid[0:hgt, 0:wid]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    out: dict[str, list] = {"prev_image": [], "image": [], "homography": [], "flow": [],
                            "label": []}
    for (prev, _), (cur, h) in zip(frames[:-1], frames[1:]):
        out["prev_image"].append(to_tensor_image(prev).numpy())
        out["image"].append(to_tensor_image(cur).numpy())
        out["homography"].append(h)
        back = transform_points(np.linalg.inv(h), grid) - grid  # current pixel -> previous
        out["flow"].append(back.reshape(hgt, wid, 2).transpose(2, 0, 1))
        out["label"].append(cur.mean(axis=2).astype(np.int64) * num_classes // 256)
    dtypes = {"label": torch.int64}
    return {k: torch.from_numpy(np.stack(v)).to(device, dtypes.get(k, torch.float32))
            for k, v in out.items()}


def amp_dtype(device: torch.device) -> torch.dtype:
    """Return the autocast dtype of the recipes' ``optim.amp: auto`` on ``device``.

    bfloat16 where the GPU supports it (and on the CPU), else float16 (which needs the scaler).
    """
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def run_amp_steps(preset_name: str, size: tuple[int, int], batch: int, steps: int,
                  device: str = "cuda", warmup: int = 3, seed: int = 0,
                  time_limit_s: float = 0.0) -> dict[str, Any]:
    """Run ``warmup`` + ``steps`` AMP training steps; return timings and losses as a dict.

    Stops early (``steps`` then counts what ran) once ``time_limit_s`` (> 0) has passed.
    Raises ``FloatingPointError`` on a non-finite loss, as the trainer does.
    """
    t_start = time.monotonic()
    dev = torch.device(device)
    torch.manual_seed(seed)
    kind = get_model_kind("ssp")
    model = kind.create(preset(preset_name, input_size=tuple(size))).to(dev).train()
    trainable = kind.trainable(model)
    task = SupervisedTask(LossRecipe(kind="ssp", tc_weight=0.5, flow="gt"), BatchFlow("gt"))
    optim = OptimRecipe()
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=optim.lr,
                                  weight_decay=optim.weight_decay)
    dtype = amp_dtype(dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    data = synthetic_batch(tuple(size), batch, model.cfg.num_classes, dev, seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=dtype):
            outputs = kind.forward(trainable, data)
        loss = task(outputs, data)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    clock = Clock(dev)
    times, losses = [], []
    for k in range(warmup + steps):
        loss, ms = clock.call(step)
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {k}")
        losses.append(value)
        if k >= warmup:
            times.append(ms)
        if time_limit_s > 0 and time.monotonic() - t_start > time_limit_s and times:
            break
    result: dict[str, Any] = {"steps": len(times), "warmup_steps": warmup,
                              "amp_dtype": str(dtype).removeprefix("torch."),
                              "grad_scaler": scaler.is_enabled(), "batch": batch,
                              "size": list(size), "preset": preset_name,
                              "loss_first": losses[0], "loss_last": losses[-1],
                              "losses_finite": True,
                              "steps_per_s": round(len(times) / (sum(times) / 1e3), 3),
                              **summarise(times, "step"),
                              "device": str(dev), "seconds": round(time.monotonic() - t_start, 2)}
    result["peak_allocated_mib"] = (round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                                    if dev.type == "cuda" else None)
    return result


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 736x736, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """Run the AMP steps from the command line and print the JSON result."""
    p = argparse.ArgumentParser(prog="python -m ssp_training.amp_check",
                                description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="hiera_s")
    p.add_argument("--size", type=_size, default=(736, 736), help="training crop HxW")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=100, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after these seconds")
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        print("amp_check: error: need --batch >= 1, --steps >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2
    try:
        result = run_amp_steps(args.preset, args.size, args.batch, args.steps, args.device,
                               args.warmup, args.seed, args.time_limit)
    except (ValueError, RuntimeError, FloatingPointError) as err:
        print(f"amp_check: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
