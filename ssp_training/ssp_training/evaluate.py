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
from dataclasses import dataclass
import itertools
import os
from pathlib import Path
import sys
from typing import Any

import numpy as np
from ssp_perception.artifact import ArtifactError, ArtifactMeta
from ssp_perception.classes import ClassSet
from ssp_perception.cli import ArgumentParser, run_main
from ssp_perception.config import PRESETS
from ssp_perception.files import check_output_target, load_tensor_file, OutputError, staged_dir
from ssp_perception.models import SSPModel
from ssp_perception.registration import RegistrationConfig
from ssp_perception.streaming import NonFiniteOutputError
import torch
from torch import nn

from . import parity
from .baselines import load_video_model
from .data.dataset import ClipSequence, DatasetInfo, SequenceDataset, sibling
from .data.files import DataError
from .eval.plots import write_plots
from .eval.predictors import (BaselinePredictor, FAILURE_POLICIES, Frame, HOMOGRAPHY_SOURCES,
                              ImagePredictor, Predictor, SSPPredictor)
from .eval.report import ModelResult, write_report, write_text_atomic
from .eval.runner import Entry, RenderPlan, run_evaluation, RunSettings
from .eval.tables import per_class_table, results_table
from .flow import create_flow_provider, FlowProvider

FLOW_CHOICES = ("auto", "gt", "dis", "raft")
REGISTRATION_CHOICES = ("auto", "orb", "sift", "disk_lightglue")
ROW_NAMES = {"image": "image model", "ssp": "SSP", "dff": "DFF", "netwarp": "NetWarp",
             "tcb_ppm": "TCB-PPM", "tcb_ocr": "TCB-OCR"}


class EvalError(ValueError):
    """The inputs of an evaluation do not fit together; the message says what to change."""


# ------------------------------------------------------------------ argument validation
# Largest evaluation side: 4K frames are 2160x3840; beyond 8192 a frame and its logits would
# take tens of GB, so such a size (from --size or an artifact) is refused before allocating.
MAX_SIDE = 8192
RENDER_TOOL = "ssp_eval --render"


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`EvalError` for arguments that cannot work, before anything is loaded."""
    for name in ("threads", "max_clips", "max_frames"):
        value = getattr(args, name)
        if value < 0:
            raise EvalError(f"--{name.replace('_', '-')} must be >= 0 (0 = "
                            f"{'default' if name == 'threads' else 'all'}), got {value}")
    if args.flow_iterations < 1:
        raise EvalError(f"--flow-iterations must be >= 1, got {args.flow_iterations}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out}: exists and is not a folder (ssp_eval writes a folder of "
                        "reports there)")
    if not _existing_ancestor(out).is_dir():
        raise EvalError(f"--out {out}: {_existing_ancestor(out)} is a file, not a folder")
    if args.render:
        try:
            check_output_target(out / "render", RENDER_TOOL, True, legacy=is_legacy_render)
        except OutputError as err:
            raise EvalError(str(err)) from None
    if args.json:
        report = Path(args.json)
        if report.is_dir() or args.json.endswith(("/", os.sep)):
            raise EvalError(f"--json {args.json}: is a folder; give the report's file name, "
                            f"e.g. {report / 'eval.json'}")
        if not _existing_ancestor(report.parent).is_dir():
            raise EvalError(f"--json {report}: {_existing_ancestor(report.parent)} is a file, "
                            "not a folder")
    if args.flow_weights:
        try:
            load_tensor_file(args.flow_weights, "--flow-weights")
        except (ValueError, FileNotFoundError) as err:
            raise EvalError(str(err)) from None


def check_size(size: tuple[int, ...], source: str) -> tuple[int, int]:
    """Return the evaluation size (H, W) or raise :class:`EvalError` naming ``source``."""
    if len(size) != 2 or any(v <= 0 or v % 32 for v in size):
        raise EvalError(f"{source} must be H W, positive multiples of 32, got {list(size)}")
    if max(size) > MAX_SIDE:
        raise EvalError(f"{source} {size[0]}x{size[1]} is larger than {MAX_SIDE} pixels on a "
                        "side; refused before allocating frames that size (pass a smaller "
                        "--size)")
    return int(size[0]), int(size[1])


def is_legacy_render(folder: Path) -> bool:
    """Return True if ``folder`` looks like a ``render/`` written before output markers."""
    return all(p.is_file() and p.suffix in (".mp4", ".png") for p in folder.iterdir())


@dataclass
class LoadedCheckpoint:
    """One artifact opened for evaluation."""

    path: str
    model: nn.Module
    meta: ArtifactMeta
    kind: str
    label: str


def check_class_set(path: str, meta: ArtifactMeta, dataset: ClassSet, root: Path) -> None:
    """Raise :class:`EvalError` when a checkpoint's classes are not the dataset's."""
    ours = meta.class_set
    if ours.names != dataset.names:
        raise EvalError(
            f"class set mismatch: checkpoint {path} was trained on {ours.name!r} "
            f"({ours.num_classes} classes: {', '.join(ours.names)}) but dataset {root} uses "
            f"{dataset.name!r} ({dataset.num_classes} classes: {', '.join(dataset.names)}); "
            "evaluate it on a dataset with its class set")


def _label(path: str) -> str:
    p = Path(path)
    # runs/<name>/model.safetensors is the trainer's layout: the run folder names the model.
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem


def load_checkpoints(paths: list[str], info: DatasetInfo,
                     device: torch.device) -> list[LoadedCheckpoint]:
    """Open every artifact, check its class set against the dataset's."""
    loaded = []
    for path in paths:
        try:
            model, meta, kind = load_video_model(path, map_location=device)
        except ArtifactError as err:
            raise EvalError(str(err)) from None
        if meta.model.preset not in PRESETS:
            raise EvalError(f"{path}: model.preset {meta.model.preset!r} is not one of "
                            f"{', '.join(sorted(PRESETS))}; the artifact was not written by "
                            "ssp_train or its metadata was edited")
        check_class_set(path, meta, info.class_set, info.root)
        loaded.append(LoadedCheckpoint(path, model, meta, kind, _label(path)))
    stats = {(tuple(c.meta.mean), tuple(c.meta.std)) for c in loaded}
    if len(stats) > 1:
        raise EvalError("the checkpoints normalise their input differently (mean/std "
                        f"{sorted(stats)}); evaluate them in separate runs")
    return loaded


def trained_data_section(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """Return the ``data`` section of the recipe an artifact was trained with ({} if none)."""
    recipe = ckpt.meta.provenance.get("recipe")
    data = recipe.get("data") if isinstance(recipe, dict) else None
    return data if isinstance(data, dict) else {}


def homography_for(ckpt: LoadedCheckpoint, args: argparse.Namespace,
                   dataset_has_homographies: bool) -> str:
    """Resolve ``--homography`` for one SSP checkpoint.

    ``auto`` takes the mode the artifact was trained with (so the no-registration ablation is
    evaluated with the identity); a "dataset" training on a dataset without homographies, or an
    artifact without a recipe, uses the registrator.
    """
    if args.homography != "auto":
        return args.homography
    trained = trained_data_section(ckpt).get("homography", "registrator")
    if trained == "dataset" and not dataset_has_homographies:
        return "registrator"
    return trained if trained in HOMOGRAPHY_SOURCES else "registrator"


def registration_for(ckpt: LoadedCheckpoint, args: argparse.Namespace,
                     device: torch.device) -> RegistrationConfig:
    """Resolve ``--registration`` for one SSP checkpoint.

    ``disk_lightglue`` (the paper's registrator) needs the DISK and LightGlue weight files:
    ``--disk-weights``/``--lightglue-weights`` or the paths in the artifact's recipe. Its
    settings are the artifact's recipe's when it trained with DISK + LightGlue, else the
    reference-parity ones (:data:`ssp_training.parity.REGISTRATION`). ``auto`` picks it when
    the weights exist and ORB otherwise (said in the report's settings).
    """
    trained = trained_data_section(ckpt).get("registration") or {}
    disk = args.disk_weights or trained.get("disk_weights", "")
    glue = args.lightglue_weights or trained.get("lightglue_weights", "")
    have = bool(disk and glue and Path(disk).is_file() and Path(glue).is_file())
    method = args.registration
    if method == "auto":
        method = "disk_lightglue" if have else "orb"
    if method != "disk_lightglue":
        return RegistrationConfig(method=method)
    if not have:
        raise EvalError(f"--registration disk_lightglue needs the DISK and LightGlue weight "
                        f"files (--disk-weights, --lightglue-weights; got {disk or 'none'!r} "
                        f"and {glue or 'none'!r}); or use --registration orb")
    base = dict(parity.REGISTRATION)
    if trained.get("method") == "disk_lightglue":
        base.update(trained)
    try:
        return RegistrationConfig(**{**base, "disk_weights": disk, "lightglue_weights": glue,
                                     "device": str(device)})
    except (TypeError, ValueError) as err:
        raise EvalError(f"registration of {ckpt.path}: {err}") from None


def build_entries(ckpts: list[LoadedCheckpoint], args: argparse.Namespace,
                  dataset_has_homographies: bool = True,
                  device: torch.device | None = None) -> list[Entry]:
    """Return the rows to evaluate: each checkpoint's method, plus image rows if asked."""
    device = device or torch.device("cpu")
    rows: list[tuple[str, Predictor, dict[str, Any], LoadedCheckpoint]] = []
    for i, c in enumerate(ckpts):
        given = args.names[i] if args.names else ""
        if args.no_propagation or c.kind == "image":
            rows.append((given or ROW_NAMES["image"], ImagePredictor(c.model.image_model),
                         {"propagation": False}, c))
        elif c.kind == "ssp":
            if args.with_image_model:
                rows.append((ROW_NAMES["image"], ImagePredictor(c.model.image_model),
                             {"propagation": False}, c))
            homography = homography_for(c, args, dataset_has_homographies)
            registration = (registration_for(c, args, device) if homography == "registrator"
                            else RegistrationConfig(method="identity"))
            rows.append((given or ROW_NAMES["ssp"],
                         SSPPredictor(c.model, homography, registration,
                                      args.on_registration_failure),
                         {"homography": homography,
                          **({"registration": registration.method}
                             if homography == "registrator" else {}),
                          "on_registration_failure": args.on_registration_failure}, c))
        else:
            rows.append((given or ROW_NAMES[c.kind], BaselinePredictor(c.model),
                         {"baseline": c.model.video_cfg.to_dict()}, c))
    names = [name for name, *_ in rows]
    return [Entry(f"{name} ({c.label})" if names.count(name) > 1 else name, c.path, predictor,
                  {**extra, "class_names": list(c.meta.class_set.names),
                   "preset": c.meta.model.preset})
            for name, predictor, extra, c in rows]


def pick_flow(args: argparse.Namespace, info: DatasetInfo, first_clip: list[Path],
              device: torch.device) -> tuple[str, FlowProvider | None]:
    """Resolve ``--flow``; return (name, provider or None for ground truth)."""
    name = args.flow
    has_gt = len(first_clip) > 1 and sibling(first_clip[1], "flow").is_file()
    if name == "auto":
        if not has_gt and not args.flow_weights:
            raise EvalError(f"{info.root} has no ground-truth flow, and the paper's TC uses "
                            "RAFT (SSP_SPEC §7.3): give --flow-weights (a raft_large state "
                            "dict), or choose --flow dis for an offline estimate")
        name = "gt" if has_gt else "raft"
    if name == "gt":
        if not has_gt:
            raise EvalError(f"--flow gt needs ground-truth flow (data/<clip>/flow/*.npz) and "
                            f"{info.root} has none; use --flow dis, or raft with "
                            "--flow-weights")
        return name, None
    try:
        return name, create_flow_provider(name, args.flow_weights or None,
                                          iterations=args.flow_iterations, device=str(device))
    except (ValueError, FileNotFoundError) as err:
        raise EvalError(str(err)) from None


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


def dataset_has_homographies(first_clip: list[Path]) -> bool:
    """Return whether the dataset stores homographies (checked on its first clip)."""
    return len(first_clip) > 1 and sibling(first_clip[1], "registration").is_file()


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
