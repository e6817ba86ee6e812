"""``ssp_train export-logits``: run a trained teacher over every training frame, store logits.

Format (read by ``data.dataset.TeacherLogitsDataset``): ``<out>/<clip>/<stem>.npz`` holding one
(C, h, w) float16 or float32 array (``--dtype``), written by the data engineer's
``save_logits`` (compressed, atomic), plus ``<out>/logits.json``, a manifest of the teacher,
class set, stored size, dtype and per-clip completion.

Decisions (SSP_SPEC §4.5 says fp16 and a lower resolution are reasonable deviations):

- The teacher runs on whole frames at its own input size (the artifact's ``input_size``, e.g.
  1440x2560), one frame at a time, like Ref; the bicubically upsampled logits are then resized
  with antialiasing to the stored size. By default that is a quarter of the input size, the
  resolution of the teacher's own stride-4 logits, so nothing the teacher computed is lost.
  Ref stores float32 at full resolution (118 MB per 8-class 1440x2560 frame); the default
  (float16, stride 4) is ~30x less. ``--dtype float32 --size 1440x2560`` stores what Ref stores.
- Every frame is exported (Ref does the same: KD pairs need frames j and j-1).
- Resumable: frames whose file exists are skipped, so a killed export continues where it
  stopped; the manifest must match (same teacher shape, classes and size, and the same
  teacher file by SHA-256, dataset folder and split) or it is an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import shutil
from typing import Any

from ssp_perception.artifact import load_artifact
from ssp_perception.backends.engine_cache import file_sha256
from ssp_perception.config import MAX_SIDE, SIZE_MULTIPLE
from ssp_perception.files import atomic_write_json
from ssp_perception.progress import progress_bar
import torch

from .data.files import make_folder
from .data.frames import (clip_frames, DatasetInfo, list_clips, load_frame, LOGIT_DTYPES,
                          logits_path, resize_logits, save_logits, to_tensor_image)
from .distributed import resolve_device

MANIFEST = "logits.json"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Return the manifest of an export folder (raises if missing or unreadable)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a folder written by "
                                "'ssp_train export-logits'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("num_classes", "size", "clips"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    return data


def _write_manifest(folder: Path, data: dict[str, Any]) -> None:
    atomic_write_json(folder / MANIFEST, data, indent=1)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 184x320), "
                                         f"got {text!r}") from None
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"size must have sides 1..{MAX_SIDE}, got {text!r}")
    return h, w


def _parse_input_size(text: str) -> tuple[int, int]:
    h, w = _parse_size(text)
    return check_input_size((h, w))


def check_input_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return a teacher input size (H, W) if both sides are multiples of 32, else raise."""
    if any(v % SIZE_MULTIPLE for v in size):
        raise argparse.ArgumentTypeError(
            f"--input-size must be multiples of {SIZE_MULTIPLE} (the stride-32 feature map "
            f"must be whole), got {size[0]}x{size[1]}; e.g. "
            f"{max(SIZE_MULTIPLE, round(size[0] / SIZE_MULTIPLE) * SIZE_MULTIPLE)}x"
            f"{max(SIZE_MULTIPLE, round(size[1] / SIZE_MULTIPLE) * SIZE_MULTIPLE)}")
    return size


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``export-logits`` options to ``p``."""
    p.add_argument("--teacher", required=True, help="teacher artifact (model.safetensors)")
    p.add_argument("--data", required=True, help="dataset root (dataset.json, train.txt)")
    p.add_argument("--out", required=True, help="output folder (created; resumes if present)")
    p.add_argument("--split", default="train", help="split to export (default: train)")
    p.add_argument("--input-size", type=_parse_input_size, default=None,
                   help="teacher input HxW (default: the artifact's input size)")
    p.add_argument("--size", type=_parse_size, default=None,
                   help="stored logits HxW (default: input size / 4, the teacher's stride-4 "
                        "resolution)")
    p.add_argument("--dtype", choices=LOGIT_DTYPES, default="float16",
                   help="stored dtype (default: float16, half the disk; Ref: float32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--yes", action="store_true",
                   help="do not stop when the estimate exceeds the free disk space")


def export_logits(teacher: str | Path, data_root: str | Path, out: str | Path,
                  split: str = "train", input_size: tuple[int, int] | None = None,
                  size: tuple[int, int] | None = None, device: str = "auto",
                  ignore_space: bool = False, progress: bool = True,
                  dtype: str = "float16") -> dict[str, Any]:
    """Export the teacher's logits for every frame of ``split``; return the manifest."""
    if dtype not in LOGIT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(LOGIT_DTYPES)}")
    out = Path(out)
    dev = resolve_device(device, key="--device")
    model, meta = load_artifact(teacher, map_location=dev)
    info = DatasetInfo.load(data_root)
    if meta.class_set.num_classes != info.class_set.num_classes:
        raise ValueError(f"teacher {teacher} predicts {meta.class_set.num_classes} classes, "
                         f"dataset {data_root} has {info.class_set.num_classes}")
    try:
        input_size = check_input_size(tuple(input_size or meta.input_size))
    except argparse.ArgumentTypeError as err:
        raise ValueError(str(err)) from None
    size = tuple(size or (input_size[0] // 4, input_size[1] // 4))
    clips = list_clips(data_root, split)
    frames = {c: clip_frames(data_root, c) for c in clips}
    manifest = {"teacher": str(teacher), "teacher_sha256": file_sha256(teacher),
                "teacher_model": meta.model.to_dict(),
                "class_set": meta.class_set.to_dict(), "num_classes": meta.model.num_classes,
                "input_size": list(input_size), "size": list(size), "dtype": dtype,
                "dataset": str(data_root), "dataset_path": str(Path(data_root).resolve()),
                "split": split,
                "clips": {c: {"frames": len(f), "done": False} for c, f in frames.items()}}
    make_folder(out, "--out")
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        for key in ("teacher_model", "num_classes", "size", "input_size", "dtype"):
            if old.get(key, "float16" if key == "dtype" else None) != manifest[key]:
                raise ValueError(f"{out} holds logits with another {key} ({old.get(key)} vs "
                                 f"{manifest[key]}); use a new --out folder")
        # Which teacher and which frames (manifests before these keys cannot tell): a resume
        # must not mix another teacher's logits, or another dataset's, into these.
        for key, what in (("teacher_sha256", "teacher"), ("dataset_path", "dataset"),
                          ("split", "split")):
            if key in old and old[key] != manifest[key]:
                raise ValueError(f"{out} holds logits of another {what} ({old.get(what)!r}"
                                 f"); resume only with the same --teacher, --data and "
                                 f"--split, or use a new --out folder")
        done = {c for c, v in old["clips"].items() if v.get("done")}
        manifest["clips"] = {c: {"frames": len(f), "done": c in done}
                             for c, f in frames.items()}
    todo = [(c, f) for c in clips for f in frames[c]
            if not logits_path(out, c, f.stem).is_file()]
    total = sum(len(f) for f in frames.values())
    raw = total * meta.model.num_classes * size[0] * size[1] * (2 if dtype == "float16" else 4)
    free = shutil.disk_usage(out).free
    print(f"[export-logits] {total} frames ({len(todo)} to do) of {len(clips)} clips, "
          f"{meta.model.num_classes}x{size[0]}x{size[1]} {dtype} each: at most "
          f"{raw / 2**30:.2f} GiB before compression ({free / 2**30:.1f} GiB free)", flush=True)
    if raw > free and not ignore_space:
        raise OSError(f"the export may need {raw / 2**30:.1f} GiB but {out} has "
                      f"{free / 2**30:.1f} GiB free; pass --yes to try anyway or a smaller "
                      "--size")
    _write_manifest(out, manifest)
    bar = progress_bar(total=len(todo), desc="export-logits", unit="frame", disable=not progress)
    with torch.no_grad():
        for clip in clips:
            for frame in frames[clip]:
                path = logits_path(out, clip, frame.stem)
                if path.is_file():
                    continue
                x = to_tensor_image(load_frame(frame, input_size))[None].to(dev)
                logits = model.output_logits(model.image_step(x)[0], x.shape[-2:])
                logits = logits[0].float().cpu().numpy()  # (C, H, W)
                save_logits(path, resize_logits(logits, size), dtype)
                bar.update()
            manifest["clips"][clip]["done"] = True
            _write_manifest(out, manifest)
    bar.close()
    return manifest


def export_from_args(args: argparse.Namespace) -> None:
    """Run :func:`export_logits` from parsed ``export-logits`` arguments."""
    export_logits(args.teacher, args.data, args.out, split=args.split,
                  input_size=args.input_size, size=args.size, device=args.device,
                  ignore_space=args.yes, dtype=args.dtype)
