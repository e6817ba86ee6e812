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
nothing). GPU times are CUDA-event times (:class:`Clock`, ``gpu_check_timing`` is their one
home), reported as medians after warm-up; FPS is 1000 / median milliseconds.

This module is the command line and the run; ``gpu_check_config`` holds :class:`CheckConfig`,
``gpu_check_timing`` the clock and the part runner (budgets, hard limits),
``gpu_check_parts`` the measured parts and their plan, ``gpu_check_report`` the JSON report
and its tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import datetime as dt
import os
from pathlib import Path
import sys
import time
from typing import Any

from .gpu_check_config import CheckConfig, DTYPES, KINDS, MODES
from .gpu_check_parts import Context, plan, training_part
from .gpu_check_report import (config_dict, environment, JSON_NAME, render_table, SCHEMA_VERSION,
                               status_text, summary, TABLE_NAME, TOOL, WEIGHTS_NOTE,
                               write_report)
from .gpu_check_timing import Clock, run_part, STATUSES, summarise
from ..files import atomic_write_json, check_output_target, OUTPUT_MARKER

# The names tests and ssp_training import from here; their homes are the gpu_check_* modules.
__all__ = ["CheckConfig", "Clock", "Context", "DTYPES", "JSON_NAME", "KINDS", "main", "MODES",
           "render_table", "run_check", "run_part", "STATUSES", "summarise", "TABLE_NAME",
           "TOOL", "training_part"]


def run_check(cfg: CheckConfig, out_dir: Path | None = None,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part of ``cfg``; write the report after each part if ``out_dir`` is given."""
    t0 = time.monotonic()
    ctx = Context(cfg)
    report: dict[str, Any] = {
        "tool": TOOL, "schema_version": SCHEMA_VERSION,
        "mode": ("cpu quick" if cfg.quick else "cpu") if ctx.device.type == "cpu" else "cuda",
        "complete": False, "started": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), "weights": WEIGHTS_NOTE, "config": config_dict(cfg),
        "environment": environment(ctx), "parts": [], "summary": {}}
    deadline = t0 + cfg.time_limit_s
    parts = plan(ctx)
    for i, part in enumerate(parts, 1):
        progress(f"[{time.monotonic() - t0:6.1f} s] {i}/{len(parts)} {part.kind}: {part.name}")
        record = run_part(part, deadline)
        report["parts"].append(record)
        progress(f"[{time.monotonic() - t0:6.1f} s]   -> {status_text(record)} "
                 f"({record['elapsed_s']} s)")
        report["summary"] = summary(report["parts"], cfg)
        report["elapsed_s"] = round(time.monotonic() - t0, 1)
        if out_dir is not None:
            write_report(out_dir, report)
    report["complete"] = True
    if out_dir is not None:
        write_report(out_dir, report)
    return report


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
    p = argparse.ArgumentParser(prog="python -m ssp_perception.tools.gpu_check",
                                description=__doc__.splitlines()[0],
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
