r"""``ssp_export``: ONNX graphs and TensorRT engines of an artifact, checked against eager.

Usage::

    ssp_export onnx runs/ssp/model.safetensors --out-dir deploy/ssp_384x640
    ssp_export tensorrt deploy/ssp_384x640 --precision fp16             # build + verify
    ssp_export tensorrt runs/ssp/model.safetensors --build-only --precision int8 \\
        --calib-data datasets/uavid --calib-frames 128                   # on the target GPU

``onnx`` writes ``image.onnx`` and ``ssp.onnx`` (contract in
``ssp_perception.backends.onnx_graphs`` and docs/DEPLOYMENT.md) plus ``export.json``, then runs
onnxruntime on the CPU against eager PyTorch over a two-step recurrent sequence (first frame
with ``use_prev = 0``, then a real homography with ``use_prev = 1``); a parity failure exits 1.
``tensorrt`` builds the engines into the engine cache (``--cache-dir``, default
``$SSP_ENGINE_CACHE`` or ~/.cache/ssp_perception), where ``ssp_node`` finds them; without
``--build-only`` it then compares TensorRT with eager PyTorch on the GPU. Both print a JSON
report on stdout.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import json
import math
import os
from pathlib import Path
import sys
import time
from typing import Any

import cv2
import numpy as np
from ssp_perception.artifact import ArtifactError, load_artifact
from ssp_perception.backends.engine_cache import EngineCache, file_sha256
from ssp_perception.backends.onnx_graphs import (artifact_metadata, DEFAULT_OPSET, export_onnx,
                                                 GRAPHS, MAX_OPSET, MIN_OPSET,
                                                 OnnxExportConfig, parse_size, resolve_onnx,
                                                 write_onnx)
from ssp_perception.backends.onnxruntime_backend import OnnxRuntimeBackend, OrtConfig
from ssp_perception.backends.parity import compare_backends, normalise_frame, StepParity
from ssp_perception.backends.torch_backend import TorchBackend
from ssp_perception.cli import ArgumentParser, run_main
from ssp_perception.files import check_output_target, staged_dir
from ssp_perception.geometry import rescale_homography
from ssp_perception.progress import progress_bar
from ssp_perception.registration import create_registrator, RegistrationConfig
import torch

from .data.files import read_image, read_npy, write_json

REPORT = "export.json"
# Acceptance of a fp32 export (docs/DEPLOYMENT.md): logits within 1e-3 of eager PyTorch and
# the same label on >= 99.9 % of pixels.
ONNX_ATOL = 1e-3
ONNX_MIN_AGREEMENT = 0.999
# TensorRT acceptance per precision: (max |logit diff| or None = not checked, label agreement).
# fp32 engines are built without TF32, so they match eager closely; fp16 and INT8 change the
# arithmetic, and only the labels are a meaningful check (measured numbers go in the report).
TRT_ACCEPT = {"fp32": (1e-2, 0.999), "fp16": (None, 0.99), "int8": (None, 0.95)}


# ----------------------------------------------------------------------------------- ONNX
EXPORT_TOOL = "ssp_export onnx"
_EXPORT_FILES = {f"{g}.onnx" for g in GRAPHS} | {REPORT}


def is_legacy_export(folder: Path) -> bool:
    """Return True if ``folder`` holds exactly what ``ssp_export onnx`` wrote before markers."""
    names = {p.name for p in folder.iterdir()}
    return bool(names) and names <= _EXPORT_FILES and REPORT in names


def check_parity_options(steps: int, atol: float | None, min_agreement: float) -> None:
    """Raise ``ValueError`` naming the option if the parity settings cannot be used."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be >= 1 (1 = the first frame only, 2 = first frame, "
                         f"then the state), got {steps}")
    if atol is not None and not (math.isfinite(atol) and atol >= 0):
        raise ValueError(f"--atol must be a finite number >= 0, got {atol}")
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"--min-agreement must be in [0, 1], got {min_agreement}")


def export_artifact(artifact: str | os.PathLike, out_dir: str | os.PathLike,
                    input_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                    dynamic_hw: bool = False, check: bool = True, steps: int = 2,
                    atol: float = ONNX_ATOL, min_agreement: float = ONNX_MIN_AGREEMENT,
                    force: bool = False) -> dict[str, Any]:
    """Export both graphs of ``artifact`` into ``out_dir``; check them; return the report.

    Every setting and ``out_dir`` are checked before anything is written; the graphs are
    written into a staging folder that becomes ``out_dir`` only when complete
    (:func:`ssp_perception.files.staged_dir`), so an error or Ctrl-C leaves no half folder.
    An existing export is replaced only with ``force``; any other folder or file is refused.
    The report (also written to ``out_dir/export.json``) lists the files with their SHA-256,
    the I/O contract, and with ``check`` the per-step parity against eager PyTorch and
    ``passed``. Non-finite eager outputs raise ``ValueError`` (the artifact is broken).
    """
    check_parity_options(steps, atol, min_agreement)
    out_dir = check_output_target(out_dir, EXPORT_TOOL, force, legacy=is_legacy_export,
                                  inputs=[artifact])
    artifact = Path(artifact)
    model, meta = load_artifact(artifact)
    size = tuple(input_size or meta.input_size)
    config = OnnxExportConfig(input_size=size, opset=opset, dynamic_hw=dynamic_hw)
    extra = artifact_metadata(meta, file_sha256(artifact))
    with staged_dir(out_dir, EXPORT_TOOL, force, legacy=is_legacy_export,
                    inputs=[artifact]) as stage:
        files = {}
        for graph in progress_bar(GRAPHS, desc="export", unit="graph", file=sys.stderr):
            files[graph] = write_onnx(stage / f"{graph}.onnx",
                                      export_onnx(model, graph, config, extra))
        report: dict[str, Any] = {
            "artifact": str(artifact), "artifact_sha256": extra["artifact_sha256"],
            "input_size": list(size), "opset": opset, "dynamic_hw": dynamic_hw,
            "files": {g: {"path": str(out_dir / p.name), "sha256": file_sha256(p),
                          "bytes": p.stat().st_size} for g, p in files.items()},
        }
        if check:
            candidate = OnnxRuntimeBackend(resolve_onnx(stage), OrtConfig(device="cpu"))
            parity = compare_backends(TorchBackend(model), candidate, size, meta.mean,
                                      meta.std, steps=steps)
            report.update(_parity_report(parity, atol, min_agreement))
        write_json(stage / REPORT, report)
    return report


def _parity_report(parity: list[StepParity], atol: float | None,
                   min_agreement: float) -> dict[str, Any]:
    broken = [p for p in parity if p.reference_nonfinite]
    if broken:
        counts = ", ".join(f"{n} {name}" for name, n in broken[0].reference_nonfinite.items())
        raise ValueError(f"the artifact's own (eager PyTorch) outputs are not finite at step "
                         f"{broken[0].step} ({counts} values are NaN/inf): its weights are "
                         "broken; nothing was exported")
    limit = math.inf if atol is None else atol
    return {"parity": [p.to_dict() for p in parity],
            "accept": {"atol": atol, "min_label_agreement": min_agreement},
            "passed": all(p.passed(limit, min_agreement) for p in parity)}


# ------------------------------------------------------------------------- INT8 calibration
class CalibrationFrames:
    """Re-iterable INT8 calibration inputs from a dataset's clips (``docs/ARCHITECTURE.md``).

    Yields, per frame, every input of the SSP graph (the image graph reads only ``image``):
    the normalised frame, the state the eager model carries from the previous frame of the
    clip, the homography (the clip's ``registration/<stem>.npy`` when present, else ORB
    registration) and ``use_prev`` (0 on a clip's first frame). Frames are taken as runs of
    consecutive frames, ``frames // clips`` from the start of each clip of ``split`` in turn,
    so the calibrator sees the states the node will see; iterating again recomputes them
    (TensorRT calibrates each graph separately, and holding hundreds of states would take GBs).
    """

    def __init__(self, model: torch.nn.Module, root: str | os.PathLike, input_size:
                 tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 frames: int = 64, split: str = "train", device: str = "cpu") -> None:
        """Index the frames of ``root``'s ``split``; nothing is read until iteration."""
        self.model = model.to(device).eval()
        self.input_size, self.mean, self.std, self.device = input_size, mean, std, device
        self.runs = _calibration_runs(Path(root), split, frames)
        self.frames = sum(len(r) for r in self.runs)

    def __len__(self) -> int:
        """Return the number of calibration frames."""
        return self.frames

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one dict of float32 arrays (input name -> (1, ...) array) per frame."""
        h, w = self.input_size
        for run in self.runs:
            state, registrator = None, create_registrator(RegistrationConfig(method="orb"))
            for frame_path in run:
                rgb = read_image(frame_path)
                native = rgb.shape[:2]
                small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
                homography = self._homography(frame_path, small, native, registrator)
                x = normalise_frame(small, self.mean, self.std, self.device)
                with torch.inference_mode():
                    if state is None:
                        logits, feat = self.model.image_step(x)
                        prev_l, prev_f = torch.zeros_like(logits), torch.zeros_like(feat)
                        use = torch.zeros(1, device=self.device)
                    else:
                        (prev_l, prev_f), use = state, torch.ones(1, device=self.device)
                    h_t = torch.from_numpy(homography).float().unsqueeze(0).to(self.device)
                    out, feat, _ = self.model.step(x, prev_l, prev_f, h_t, use)
                yield {"image": x.cpu().numpy(), "prev_logits": prev_l.cpu().numpy(),
                       "prev_feat": prev_f.cpu().numpy(), "homography": h_t.cpu().numpy(),
                       "use_prev": use.cpu().numpy()}
                state = (out, feat)

    def _homography(self, frame_path: Path, small: np.ndarray, native: tuple[int, int],
                    registrator: Any) -> np.ndarray:
        result = registrator.register_next(small)  # keeps the ORB cache in step either way
        stored = frame_path.parent.parent / "registration" / f"{frame_path.stem}.npy"
        if stored.is_file():
            return rescale_homography(read_npy(stored), native, self.input_size)
        return result.homography if result.success else np.eye(3)


def _calibration_runs(root: Path, split: str, frames: int) -> list[list[Path]]:
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: calibration needs a dataset root with "
                                f"{split}.txt and data/<clip>/origin/*.png (docs/ARCHITECTURE.md)")
    clips = [c.strip() for c in split_file.read_text().splitlines() if c.strip()]
    per_clip = max(1, math.ceil(frames / max(1, len(clips))))
    runs, total = [], 0
    for clip in clips:
        pngs = sorted((root / "data" / clip / "origin").glob("*.png"))
        take = pngs[:min(per_clip, frames - total)]
        if take:
            runs.append(take)
            total += len(take)
        if total >= frames:
            break
    if not runs:
        raise FileNotFoundError(f"no frames under {root}/data/<clip>/origin/ for the clips in "
                                f"{split_file}")
    return runs


# ------------------------------------------------------------------------------- TensorRT
def build_tensorrt(source: str | os.PathLike, precision: str = "fp16",
                   input_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                   cache_dir: str | os.PathLike | None = None, device: str = "cuda",
                   workspace_gib: float = 4.0, optimization_level: int = 3,
                   calib_data: str | os.PathLike | None = None, calib_frames: int = 64,
                   calib_split: str = "train", verify: bool = True,
                   steps: int = 2) -> dict[str, Any]:
    """Build (or find) the TensorRT engines of ``source``; with ``verify`` compare with eager.

    ``source`` is an artifact or an ``ssp_export onnx`` folder (verification then needs the
    artifact the folder's metadata names). Returns the JSON report.
    """
    from ssp_perception.backends import tensorrt_backend as trt_backend

    if verify:
        check_parity_options(steps, None, 0.0)
    usable, reason = trt_backend.tensorrt_status()
    if not usable:
        raise RuntimeError(f"cannot build TensorRT engines here: {reason}")
    cache = EngineCache(cache_dir)
    sources = resolve_onnx(source, input_size, opset, cache)
    model = meta = None
    calibration = None
    if precision == "int8" and calib_data is not None:
        model, meta = load_artifact(_artifact_of(Path(source), sources.metadata))
        frames = CalibrationFrames(model, calib_data, sources.input_size, meta.mean, meta.std,
                                   calib_frames, calib_split, device)
        calibration = {g: frames for g in GRAPHS}
    start = time.perf_counter()
    build = trt_backend.TensorRTBuildConfig(precision=precision, workspace_gib=workspace_gib,
                                            optimization_level=optimization_level,
                                            calibration_frames=calib_frames)
    backend = trt_backend.TensorRTBackend(sources, build, cache, device, calibration)
    report: dict[str, Any] = {
        "source": str(source), "precision": precision, "device": trt_backend.gpu_description(),
        "input_size": list(sources.input_size), "cache_dir": str(cache.root),
        "engines": {g: {"path": str(p), "built": backend.built[g]}
                    for g, p in backend.engine_paths.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if verify:
        if model is None:
            model, meta = load_artifact(_artifact_of(Path(source), sources.metadata))
        reference = TorchBackend(model, device=device)
        parity = compare_backends(reference, backend, sources.input_size, meta.mean, meta.std,
                                  steps=steps)
        report.update(_parity_report(parity, *TRT_ACCEPT[precision]))
    return report


def _artifact_of(source: Path, metadata: dict[str, str]) -> Path:
    """Return the artifact behind ``source`` (itself, or the one an ONNX folder records)."""
    if source.is_file():
        return source
    recorded = json.loads(metadata.get("artifact", "{}")).get("provenance", {})
    hint = metadata.get("artifact_sha256", "unknown")
    raise ArtifactError(f"{source} is an ONNX folder; verifying or INT8-calibrating needs the "
                        f"artifact it came from (sha256 {hint}, provenance {recorded}): pass "
                        "the .safetensors file instead, or --build-only")


# ------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ssp_export", description=__doc__.split("\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("onnx", help="export image.onnx + ssp.onnx and check them on the CPU")
    o.add_argument("artifact", help="model artifact (.safetensors from ssp_train)")
    o.add_argument("--out-dir", required=True, help="folder for image.onnx, ssp.onnx, "
                   "export.json (created)")
    _add_common(o)
    o.add_argument("--dynamic-hw", action="store_true",
                   help="symbolic H/W (verified at a second size; fails if the graph bakes "
                   "sizes in, see docs/DEPLOYMENT.md)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    o.add_argument("--force", action="store_true",
                   help="replace an earlier ssp_export onnx output in --out-dir")
    o.add_argument("--atol", type=float, default=ONNX_ATOL,
                   help=f"largest accepted |eager - onnxruntime| (default {ONNX_ATOL})")
    o.add_argument("--min-agreement", type=float, default=ONNX_MIN_AGREEMENT,
                   help=f"smallest accepted share of equal labels (default "
                   f"{ONNX_MIN_AGREEMENT})")
    t = sub.add_parser("tensorrt", help="build TensorRT engines into the engine cache")
    t.add_argument("source", help="artifact (.safetensors) or an 'ssp_export onnx' folder")
    _add_common(t)
    t.add_argument("--build-only", action="store_true",
                   help="build (or find) the engines, skip the comparison with eager PyTorch")
    t.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="engine precision (default fp16; int8 needs --calib-data once)")
    t.add_argument("--cache-dir", default=None,
                   help="engine cache (default $SSP_ENGINE_CACHE or ~/.cache/ssp_perception)")
    t.add_argument("--device", default="cuda", help="CUDA device (default cuda = cuda:0)")
    t.add_argument("--workspace-gib", type=float, default=4.0,
                   help="TensorRT builder workspace in GiB (default 4; 1-2 on Jetson Orin)")
    t.add_argument("--opt-level", type=int, default=3,
                   help="TensorRT builder optimisation level 0-5 (default 3)")
    t.add_argument("--calib-data", default=None,
                   help="dataset root whose frames calibrate INT8 (data/<clip>/origin/*.png)")
    t.add_argument("--calib-split", default="train", help="split file of --calib-data "
                   "(default train)")
    t.add_argument("--calib-frames", type=int, default=64,
                   help="calibration frames, consecutive runs over the clips (default 64)")
    return p


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=parse_size, default=None,
                   help="network input HxW, multiples of 32 (default: the artifact's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset {MIN_OPSET}-{MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--steps", type=int, default=2,
                   help="frames in the parity sequence (default 2: first frame, then state)")


def _run(args: argparse.Namespace) -> int:
    if args.command == "onnx":
        report = export_artifact(args.artifact, args.out_dir, args.size, args.opset,
                                 args.dynamic_hw, not args.no_check, args.steps,
                                 args.atol, args.min_agreement, args.force)
    else:
        report = build_tensorrt(args.source, args.precision, args.size, args.opset,
                                args.cache_dir, args.device, args.workspace_gib,
                                args.opt_level, args.calib_data, args.calib_frames,
                                args.calib_split, not args.build_only, args.steps)
    print(json.dumps(report, indent=2))
    if report.get("passed") is False:
        print("ssp_export: parity check FAILED (see 'parity' above)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``ssp_export`` command line; return the process exit code."""
    args = _parser().parse_args(argv)
    return run_main(lambda: _run(args), "ssp_export",
                    usage_errors=(ArtifactError, FileNotFoundError, ValueError, RuntimeError),
                    interrupted="no output folder written")


__all__ = ["CalibrationFrames", "build_tensorrt", "export_artifact", "main"]

if __name__ == "__main__":
    sys.exit(main())
