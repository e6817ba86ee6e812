"""``ssp_data``: make, prepare, inspect and convert datasets (docs/DATA_FORMAT.md).

Sub-commands::

    ssp_data synth --out D [--sequences 4 --frames 60 --size 384x640 --seed 0 ...]
    ssp_data prepare uavid --uavid uavid_v1.5_official_release.zip [--vdd VDD.zip] --out D
    ssp_data prepare ruralscapes --source ruralscapes.zip --out D
    ssp_data info D
    ssp_data to-bag --root D (--clip C | --split val) --out B [--storage mcap --compressed]

``synth`` and ``info`` print one JSON object on stdout (speed, counts), the others a summary
line. Bad input (arguments, archives, dataset folders, output paths) prints one
``ssp_data: error:`` line on stderr and exits with status 2; Ctrl-C/SIGTERM exit 130/143
(:mod:`ssp_perception.cli`) and leave no partial output.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
import json
import logging
import os
from pathlib import Path
import sys
import time

from ssp_perception.cli import ArgumentParser, non_negative_int, run_main
from ssp_perception.config import MAX_SIDE

from .archive import ArchiveError
from .frames import clip_frames, DatasetInfo, list_clips, sibling, SPLITS
from .prepare import DEFAULT_SIZE, prepare_ruralscapes, prepare_uavid, PrepareError
from .synth import FPS_RANGE, generate_dataset, MAX_MOVERS, SynthConfig
from .to_bag import STORAGES, topics, write_bag

_NUISANCES = ("noise", "exposure", "white_balance", "blur", "jpeg", "haze")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 384x640, got {text!r}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"size must be HxW with sides 1..{MAX_SIDE}, got "
                                         f"{text!r}")
    return h, w


def _within(low: float, high: float):
    """Return an argparse ``type``: a finite number in [low, high] (the error names the flag)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:   # NaN and inf fail too
            raise argparse.ArgumentTypeError(f"expected a number in {low:g}..{high:g}, got "
                                             f"{text!r}")
        return value
    return parse


def _add_synth(sub: argparse._SubParsersAction) -> None:
    d = {f.name: f.default for f in fields(SynthConfig)}
    p = sub.add_parser("synth", help="generate the synthetic aerial video dataset")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--sequences", type=int, default=d["sequences"], help="number of clips")
    p.add_argument("--frames", type=int, default=d["frames"], help="frames per clip")
    p.add_argument("--size", type=_size, default=d["size"], help="frame size HxW")
    p.add_argument("--seed", type=non_negative_int, default=d["seed"],
                   help="random seed (an integer >= 0)")
    p.add_argument("--fps", type=_within(*FPS_RANGE), default=d["fps"],
                   help=f"frame rate, {FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="share of clips in the val split")
    p.add_argument("--vehicles", type=_within(0.0, MAX_MOVERS), default=d["moving_vehicles"],
                   help=f"mean moving vehicles per view-sized area, 0..{MAX_MOVERS:g}")
    p.add_argument("--persons", type=_within(0.0, MAX_MOVERS), default=d["moving_persons"],
                   help=f"mean walking people per view-sized area, 0..{MAX_MOVERS:g}")
    p.add_argument("--nuisance", type=float, default=None,
                   help="set every nuisance strength (0 = clean frames, 1 = default)")
    for name in _NUISANCES:
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                       help=f"{name.replace('_', ' ')} strength (overrides --nuisance)")
    p.add_argument("--forward-flow", action="store_true",
                   help="also store the forward flow (doubles the flow files)")
    p.add_argument("--workers", type=int, default=2, help="file-writing threads")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_synth(a: argparse.Namespace) -> int:
    strengths = {}
    for name in _NUISANCES:
        value = getattr(a, name)
        strengths[name] = value if value is not None else (
            a.nuisance if a.nuisance is not None else 1.0)
    cfg = SynthConfig(size=a.size, frames=a.frames, sequences=a.sequences, seed=a.seed,
                      fps=a.fps, val_fraction=a.val_fraction, moving_vehicles=a.vehicles,
                      moving_persons=a.persons, forward_flow=a.forward_flow, **strengths)
    n = cfg.sequences * cfg.frames
    wall, cpu = time.perf_counter(), os.times()
    generate_dataset(a.out, cfg, progress=not a.quiet, overwrite=a.force, workers=a.workers)
    wall, end = time.perf_counter() - wall, os.times()
    cpu_s = (end.user - cpu.user) + (end.system - cpu.system)
    print(json.dumps({"out": str(a.out), "frames": n, "size": list(cfg.size),
                      "seconds": round(wall, 3), "frames_per_second": round(n / wall, 2),
                      "cpu_seconds_per_frame": round(cpu_s / n, 4),
                      "load_average_1min": round(os.getloadavg()[0], 2),
                      "cpu_count": os.cpu_count()}))
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a real dataset from its downloads")
    which = p.add_subparsers(dest="dataset", required=True)
    u = which.add_parser("uavid", help="UAVid v1.5 video release (+ VDD labels)")
    u.add_argument("--uavid", required=True, type=Path,
                   help="uavid_v1.5_official_release.zip (or its unpacked folder)")
    u.add_argument("--vdd", type=Path, default=None,
                   help="VDD's UAVid annotations (zip or folder with <seq>/VDD_Labels/*.png)")
    r = which.add_parser("ruralscapes", help="RuralScapes videos + labels")
    r.add_argument("--source", required=True, type=Path,
                   help="RuralScapes download (zip or folder with videos/ and labels/)")
    for q in (u, r):
        q.add_argument("--out", required=True, type=Path, help="output dataset folder")
        q.add_argument("--size", type=_size, default=DEFAULT_SIZE,
                       help="stored frame size HxW (default 1440x2560, as the spec)")
        q.add_argument("--keep-cache", action="store_true",
                       help="keep videos extracted from archives under <out>/.cache")
        q.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_prepare(a: argparse.Namespace) -> int:
    if a.dataset == "uavid":
        report = prepare_uavid(a.uavid, a.out, vdd=a.vdd, size=a.size, progress=not a.quiet,
                               keep_cache=a.keep_cache)
    else:
        report = prepare_ruralscapes(a.source, a.out, size=a.size, progress=not a.quiet,
                                     keep_cache=a.keep_cache)
    if not report.changed:
        print(f"{report.out}: already prepared, nothing to do")
    else:
        print(f"{report.out}: {len(report.clips['train'])} train and "
              f"{len(report.clips['val'])} val clips ({report.sequences_done} sequences "
              f"prepared, {report.sequences_skipped} already done)")
    return 0


def _add_to_bag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("to-bag", help="write a clip or split as a rosbag2")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--clip", help="one clip name")
    which.add_argument("--split", choices=SPLITS, help="every clip of a split, in order")
    p.add_argument("--out", required=True, type=Path, help="bag folder to create")
    p.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3",
                   help="rosbag2 storage plugin")
    p.add_argument("--compressed", action="store_true",
                   help="also write JPEG sensor_msgs/CompressedImage frames")
    p.add_argument("--fps", type=float, default=None,
                   help="stamp rate (default: dataset fps); the last stamp must fit a ROS time "
                        "(int32 seconds, 2038), and stamps at most 1e9 per second")
    p.add_argument("--topic-prefix", default="/camera", help="topic namespace")
    p.add_argument("--force", action="store_true", help="replace an existing --out bag")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_to_bag(a: argparse.Namespace) -> int:
    out = write_bag(a.root, a.clip or a.split, a.out, storage=a.storage,
                    compressed=a.compressed, fps=a.fps, topic_prefix=a.topic_prefix,
                    overwrite=a.force, progress=not a.quiet)
    names = [t for k, t in topics(a.topic_prefix).items() if a.compressed or k != "compressed"]
    print(f"{out}: {a.storage} bag with topics {', '.join(names)}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="check a dataset folder and print its summary as JSON")
    p.add_argument("root", type=Path, help="dataset folder")


def _run_info(a: argparse.Namespace) -> int:
    info = DatasetInfo.load(a.root)
    summary = {"root": str(a.root), "source": info.source, "class_set": info.class_set.name,
               "size": list(info.size), "fps": info.fps, "splits": {}}
    for split in SPLITS:
        if not (a.root / f"{split}.txt").is_file():
            continue
        clips = list_clips(a.root, split)
        frames = [f for c in clips for f in clip_frames(a.root, c)]
        summary["splits"][split] = {
            "clips": len(clips), "frames": len(frames),
            "labelled": sum(sibling(f, "mask").is_file() for f in frames),
            "with_homography": sum(sibling(f, "registration").is_file() for f in frames),
            "with_flow": sum(sibling(f, "flow").is_file() for f in frames)}
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the ``ssp_data`` argument parser."""
    parser = ArgumentParser(prog="ssp_data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    _add_prepare(sub)
    _add_info(sub)
    _add_to_bag(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ssp_data``; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run = {"synth": _run_synth, "prepare": _run_prepare, "info": _run_info,
           "to-bag": _run_to_bag}[args.command]
    if args.command == "prepare":
        note = (f"finished sequences kept in {args.out}, nothing half-written; rerun the same "
                "command to resume")
    elif args.command == "info":
        note = "nothing written"
    else:
        note = f"no output written ({args.out} is as before)"
    return run_main(lambda: run(args), "ssp_data",
                    usage_errors=(ArchiveError, PrepareError, FileExistsError,
                                  FileNotFoundError, ValueError),
                    interrupted=note)


if __name__ == "__main__":
    sys.exit(main())
