"""The dataset side of ``ssp_eval``: checked arguments and sizes, the TC flow, homographies."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ssp_perception.config import MAX_SIDE
from ssp_perception.files import (check_can_create, check_output_target, check_report_file,
                                  load_tensor_file, OutputError)
import torch

from .report import EVAL_TOOL, is_legacy_report
from ..data.dataset import ClipSequence, DatasetInfo, sibling
from ..flow import create_flow_provider, FlowProvider


class EvalError(ValueError):
    """The inputs of an evaluation do not fit together; the message says what to change."""


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
    if args.json and args.json.endswith(("/", os.sep)):
        raise EvalError(f"--json {args.json}: is a folder; give the report's file name, "
                        f"e.g. {Path(args.json) / 'eval.json'}")
    try:
        check_can_create(out, "--out")   # the tables, plots (and report) go there
        check_report_file(args.json or out / "eval.json", EVAL_TOOL,
                          "--json" if args.json else "--out", legacy=is_legacy_report)
    except OutputError as err:
        raise EvalError(str(err)) from None
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


def dataset_has_homographies(first_clip: list[Path]) -> bool:
    """Return whether the dataset stores homographies (checked on its first clip)."""
    return len(first_clip) > 1 and sibling(first_clip[1], "registration").is_file()


def check_clip_homographies(clips: list[ClipSequence], max_frames: int = 0) -> None:
    """Raise :class:`EvalError` unless every frame after each clip's first has a homography.

    Checked before anything runs when SSP reads the dataset's homographies (the first clip
    decides that the dataset has them): one frame without ``registration/<stem>.npy`` would
    otherwise stop the evaluation midway.
    """
    for clip in clips:
        for frame in clip.frames[1:max_frames or None]:
            path = sibling(frame, "registration")
            if not path.is_file():
                raise EvalError(f"--homography dataset, but clip {clip.name} has no {path} "
                                f"(the homography into frame {frame.name}); add it, or use "
                                "--homography registrator")
