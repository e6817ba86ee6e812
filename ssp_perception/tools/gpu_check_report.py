"""The report of ``ssp_gpu_check``: machine, targets, the JSON file and its markdown tables."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
import json
import os
from pathlib import Path
import platform
from typing import Any

import cv2
import torch

from .gpu_check_config import CheckConfig
from .gpu_check_parts import Context
from ..files import atomic_write_json, atomic_write_text

TOOL = "ssp_gpu_check"
SCHEMA_VERSION = 1
JSON_NAME = "gpu_check.json"
TABLE_NAME = "gpu_check.md"
TARGET_STREAM_FPS = 300.0
"""hiera_s 736x1280 end to end on an H200 in the best mode (issue 19: >= 3x the paper's A100)."""
TARGET_SSP_RATIO = 1.05
"""SSP step / image step in that mode."""
TARGET_PRESET, TARGET_SIZE = "hiera_s", (736, 1280)
WEIGHTS_NOTE = ("random weights: timings only (speed does not depend on the weights' values; "
                "random DISK + LightGlue weights match nothing, so their success rate means "
                "nothing)")


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


def status_text(p: dict[str, Any]) -> str:
    """Return a part record's status, with its error unless it is ok."""
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
            f"| {_fmt(m.get('peak_allocated_mib'), 0)} | {status_text(p)} |")
    lines += ["", "| onnxruntime vs torch float32 | ORT image ms | torch image ms | ORT SSP ms "
              "| torch SSP ms | export + load s | status |", "|---|---:|---:|---:|---:|---:|---|"]
    for p in (p for p in parts if p["kind"] == "onnxruntime"):
        m = p["metrics"]
        lines.append(f"| {p['name']} | {_fmt(m.get('onnxruntime_image_ms'))} "
                     f"| {_fmt(m.get('torch_image_ms'))} | {_fmt(m.get('onnxruntime_ssp_ms'))} "
                     f"| {_fmt(m.get('torch_ssp_ms'))} | {_fmt(m.get('export_and_load_s'))} "
                     f"| {status_text(p)} |")
    lines += ["", "| training | AMP | steps | steps/s | median step ms | loss first -> last "
              "| peak MiB | status |", "|---|---|---:|---:|---:|---|---:|---|"]
    for p in (p for p in parts if p["kind"] == "training"):
        m = p["metrics"]
        loss = (f"{_fmt(m.get('loss_first'), 4)} -> {_fmt(m.get('loss_last'), 4)}"
                if m else "-")
        lines.append(f"| {p['name']} | {m.get('amp_dtype', '-')} | {_fmt(m.get('steps'))} "
                     f"| {_fmt(m.get('steps_per_s'))} | {_fmt(m.get('step_ms'))} | {loss} "
                     f"| {_fmt(m.get('peak_allocated_mib'), 0)} | {status_text(p)} |")
    lines += ["", "| registration per frame | ORB (CPU) ms | kornia DISK+LightGlue ms "
              "| kornia/ORB | ORB success | kornia weights | status |",
              "|---|---:|---:|---:|---:|---|---|"]
    for p in (p for p in parts if p["kind"] == "registration"):
        m = p["metrics"]
        lines.append(f"| {p['name']} | {_fmt(m.get('orb_frame_ms'))} "
                     f"| {_fmt(m.get('kornia_frame_ms'))} | {_fmt(m.get('kornia_over_orb'), 3)} "
                     f"| {_fmt(m.get('orb_success_rate'), 3)} | {m.get('kornia_weights', '-')} "
                     f"| {status_text(p)} |")
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


def config_dict(cfg: CheckConfig) -> dict[str, Any]:
    """Return ``cfg`` as JSON values, sizes keyed by preset."""
    d = asdict(cfg)
    d["sizes"] = {name: list(size) for name, size in cfg.sizes}
    return json.loads(json.dumps(d))


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """Write the JSON report and its table into ``out_dir``, each file atomically."""
    atomic_write_json(out_dir / JSON_NAME, report)
    atomic_write_text(out_dir / TABLE_NAME, render_table(report))
