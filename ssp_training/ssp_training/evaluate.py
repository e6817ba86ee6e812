r"""``ssp_eval``: score checkpoints on a prepared dataset split like the paper's table.

Usage::

    ssp_eval --checkpoint runs/ssp/model.safetensors runs/dff/model.safetensors \
        --data datasets/synth --split val --with-image-model --json runs/eval/eval.json
    ssp_eval --checkpoint C --data D --no-propagation          # the SSP checkpoint's image model
    ssp_eval --checkpoint C --data D --render                  # + side-by-side videos per clip

For every checkpoint it reports mIoU (pooled over labelled frames, per class too), TC (flow
warped consecutive predictions, SSP_SPEC §7.3, out-of-view pixels as class 0 like Ref unless
``--tc-out-of-view ignore``), parameters,
GFLOPs (torch's FLOP counter), latency and FPS at the evaluation size. Outputs go to the
``--out`` folder: ``eval.json`` (or ``--json``), ``table.md`` (the layout of the paper's
table, also printed), ``per_class.md``, ``plots/`` and, with ``--render``, ``render/``.
See docs/EVALUATION.md for every decision behind the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
from pathlib import Path
import sys
from typing import Any

import numpy as np
from ssp_perception.artifact import ArtifactMeta
from ssp_perception.cli import ArgumentParser, run_main
from ssp_perception.files import staged_dir
from ssp_perception.models import SSPModel
from ssp_perception.streaming import NonFiniteOutputError
import torch

from . import parity
from .data.dataset import ClipSequence, DatasetInfo, SequenceDataset
from .data.files import DataError
from .eval.entries import build_entries, load_checkpoints, LoadedCheckpoint
from .eval.inputs import (check_arguments, check_clip_homographies, check_size,
                          dataset_has_homographies, EvalError, is_legacy_render, pick_flow,
                          RENDER_TOOL)
from .eval.plots import write_plots
from .eval.predictors import (FAILURE_POLICIES, Frame, HOMOGRAPHY_SOURCES, ImagePredictor,
                              SSPPredictor)
from .eval.report import ModelResult, write_report, write_text_atomic
from .eval.runner import RenderPlan, run_evaluation, RunSettings
from .eval.tables import per_class_table, results_table

FLOW_CHOICES = ("auto", "gt", "dis", "raft")
REGISTRATION_CHOICES = ("auto", "orb", "sift", "disk_lightglue")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


def _normaliser(meta: ArtifactMeta, device: torch.device):
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1) * 255.0

    def to_frame(sf) -> Frame:
        x = torch.from_numpy(np.ascontiguousarray(sf.image)).to(device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, H, W) in 0..255
        return Frame(image=(x - mean) / std, rgb=sf.image, homography=sf.homography)

    return to_frame


def _render_plan(ckpts: list[LoadedCheckpoint], args: argparse.Namespace, out: Path,
                 info: DatasetInfo, has_homographies: bool,
                 device: torch.device) -> RenderPlan | None:
    if not args.render:
        return None
    ssp = next((c for c in ckpts if c.kind == "ssp"), None)
    if ssp is None:
        raise EvalError("--render draws the image model and SSP side by side and needs an SSP "
                        "checkpoint among --checkpoint")
    model: SSPModel = ssp.model
    entry = next(e for e in build_entries([ssp], args, has_homographies, device)
                 if e.predictor.kind == "ssp")
    return RenderPlan(image=ImagePredictor(model.image_model), ssp=entry.predictor,
                      class_set=info.class_set, out_dir=out / "render", fps=info.fps)


def open_split(args: argparse.Namespace, ckpts: list[LoadedCheckpoint]
               ) -> tuple[DatasetInfo, tuple[int, int], list[ClipSequence]]:
    """Return the dataset description, the evaluation size (H, W) and the clips to run."""
    size = check_size(tuple(args.size) if args.size else tuple(ckpts[0].meta.input_size),
                      "--size" if args.size else f"input_size of {ckpts[0].path}")
    try:
        data = SequenceDataset(args.data, args.split, size=size)
    except (FileNotFoundError, ValueError) as err:
        raise EvalError(str(err)) from None
    clips = list(data)[:args.max_clips or None]
    if not clips:
        raise EvalError(f"split {args.split!r} of {args.data} has no clips")
    return data.info, size, clips


def check_homography_source(args: argparse.Namespace, ckpts: list[LoadedCheckpoint],
                            info: DatasetInfo, first_clip: list[Path]) -> None:
    """Raise :class:`EvalError` if SSP should read homographies the dataset does not have."""
    uses_ssp = any(c.kind == "ssp" for c in ckpts) and not args.no_propagation
    if (uses_ssp and args.homography == "dataset"
            and not dataset_has_homographies(first_clip)):
        raise EvalError(f"--homography dataset needs data/<clip>/registration/*.npy and "
                        f"{info.root} has none; use --homography registrator")


def write_outputs(args: argparse.Namespace, results: list[ModelResult], info: dict[str, Any],
                  device: torch.device) -> Path:
    """Write the report, tables and plots; print the table; return the report path."""
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / "eval.json"
    write_report(json_path, results, info)
    threads = torch.get_num_threads()
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU, {threads} thread{'s' if threads > 1 else ''}")
    table = results_table(results, device=device_name)
    write_text_atomic(out / "table.md", table)
    write_text_atomic(out / "per_class.md", per_class_table(results))
    if not args.no_plots:
        write_plots(results, out / "plots")
    size, flow = info["settings"]["size"], info["settings"]["flow"]
    print(f"{args.split} of {args.data} at {size[0]}x{size[1]}, TC flow: {flow}\n")
    print(table)
    print(f"report: {json_path}")
    return json_path


def evaluate(args: argparse.Namespace) -> list[ModelResult]:
    """Run the evaluation the arguments describe; write the outputs and return the results."""
    check_arguments(args)
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.names and len(args.names) != len(args.checkpoint):
        raise EvalError(f"--names gives {len(args.names)} names for "
                        f"{len(args.checkpoint)} checkpoints")
    try:
        info = DatasetInfo.load(args.data)
    except (FileNotFoundError, ValueError) as err:
        raise EvalError(str(err)) from None
    ckpts = load_checkpoints(args.checkpoint, info, device)
    info, size, clips = open_split(args, ckpts)
    first_clip = list(clips[0].frames)
    flow_name, flow = pick_flow(args, info, first_clip, device)
    check_homography_source(args, ckpts, info, first_clip)
    has_h = dataset_has_homographies(first_clip)
    entries = build_entries(ckpts, args, has_h, device)
    if any(isinstance(e.predictor, SSPPredictor) and e.predictor.source == "dataset"
           for e in entries):
        check_clip_homographies(clips, args.max_frames)
    for entry in entries:
        entry.predictor.module.eval()
    to_frame = _normaliser(ckpts[0].meta, device)
    settings = RunSettings(num_classes=info.class_set.num_classes,
                           ignore_index=info.class_set.ignore_index,
                           tc_out_of_view=args.tc_out_of_view)
    flops_frames = [to_frame(clips[0].frame(i)) for i in
                    range(min(len(clips[0]), settings.flops_skip + settings.flops_frames))]
    clip_iter = ((c.name, itertools.islice(c, args.max_frames or None)) for c in clips)
    render = _render_plan(ckpts, args, Path(args.out), info, has_h, device)
    created = not Path(args.out).exists()
    try:
        # The renderings are staged: an error or Ctrl-C leaves <out>/render as it was.
        with (staged_dir(render.out_dir, RENDER_TOOL, force=True, legacy=is_legacy_render)
              if render else contextlib.nullcontext()) as stage:
            if render:
                render = dataclasses.replace(render, out_dir=stage)
            results = run_evaluation(entries, clip_iter, to_frame, settings, flow, device,
                                     flops_frames, render=render, progress=not args.no_progress)
            _write_report(args, results, info, clips, size, flow_name, device)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()   # only if still empty
        raise
    return results


def _write_report(args: argparse.Namespace, results: list[ModelResult], info: DatasetInfo,
                  clips: list[ClipSequence], size: tuple[int, int], flow_name: str,
                  device: torch.device) -> None:
    report_info = {
        "dataset": {"root": str(info.root), "split": args.split, "source": info.source,
                    "class_set": info.class_set.to_dict(), "clips": len(clips)},
        "settings": {"size": list(size), "flow": flow_name, "homography": args.homography,
                     "registration": args.registration,
                     "resolved": {r.name: {k: r.extra[k] for k in ("homography", "registration")
                                           if k in r.extra} for r in results},
                     "tc_out_of_view": args.tc_out_of_view,
                     "device": str(device), "threads": torch.get_num_threads(),
                     "max_frames": args.max_frames, "units": "scores in %, GFLOPs per frame"}}
    write_outputs(args, results, report_info, device)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``ssp_eval`` argument parser."""
    p = ArgumentParser(prog="ssp_eval", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True,
                   help="artifacts to evaluate (SSP or baseline .safetensors)")
    p.add_argument("--data", required=True, help="prepared dataset root (with dataset.json)")
    p.add_argument("--split", default="val", help="split file to evaluate (<split>.txt)")
    p.add_argument("--no-propagation", action="store_true",
                   help="evaluate every checkpoint's image model alone (no temporal state)")
    p.add_argument("--with-image-model", action="store_true",
                   help="also evaluate each SSP checkpoint's image model (the image model row)")
    p.add_argument("--names", nargs="+", help="row names, one per checkpoint")
    p.add_argument("--flow", choices=FLOW_CHOICES, default="auto",
                   help="TC flow: ground truth, DIS, RAFT; auto = gt if the dataset has it, "
                        "else raft (the paper's; needs --flow-weights)")
    p.add_argument("--flow-weights", default="",
                   help="torchvision raft_large weights for --flow raft (nothing is downloaded)")
    p.add_argument("--flow-iterations", type=int, default=parity.EVAL["flow_iterations"],
                   help="RAFT iterations for the TC flow (20 in the paper)")
    p.add_argument("--homography", choices=("auto",) + HOMOGRAPHY_SOURCES, default="auto",
                   help="SSP homography: auto = the mode the artifact was trained with, "
                        "estimated (what the node does), the dataset's ground truth, identity")
    p.add_argument("--registration", choices=REGISTRATION_CHOICES, default="auto",
                   help="registrator for estimated homographies; auto = disk_lightglue (the "
                        "paper's) when its weights exist, else orb")
    p.add_argument("--disk-weights", default="",
                   help="DISK weights for disk_lightglue (default: the artifact recipe's)")
    p.add_argument("--lightglue-weights", default="",
                   help="LightGlue-for-DISK weights (default: the artifact recipe's)")
    p.add_argument("--on-registration-failure", choices=FAILURE_POLICIES,
                   default=parity.EVAL["on_registration_failure"],
                   help="SSP when registration fails: fuse unaligned (identity, Ref) or reset "
                        "the state")
    p.add_argument("--tc-out-of-view", choices=("ignore", "class0"),
                   default=parity.EVAL["tc_out_of_view"],
                   help="TC pixels whose flow leaves the image: class 0 as in Ref, or ignored")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="evaluation size (default: the first checkpoint's input size)")
    p.add_argument("--max-clips", type=int, default=0, help="first N clips only (0 = all)")
    p.add_argument("--max-frames", type=int, default=0,
                   help="first N frames of each clip only (0 = all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="runs/eval", help="output folder")
    p.add_argument("--json", default="", help="report path (default <out>/eval.json)")
    p.add_argument("--render", action="store_true",
                   help="write <out>/render/<clip>.mp4 and .png: input | GT | image | SSP | s")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _run(args: argparse.Namespace) -> int:
    evaluate(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ssp_eval``; return the exit status (2 on bad input, with the reason)."""
    args = build_parser().parse_args(argv)
    # DataError: a dataset file found unreadable mid-run (named in the message).
    # NonFiniteOutputError: the model gives NaN or inf, so there is nothing to score.
    return run_main(lambda: _run(args), "ssp_eval",
                    usage_errors=(EvalError, DataError, FileNotFoundError,
                                  NonFiniteOutputError),
                    interrupted=f"no report written ({args.out} is as before)")


if __name__ == "__main__":
    sys.exit(main())
