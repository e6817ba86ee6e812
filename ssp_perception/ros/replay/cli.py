"""ssp_replay: run a rosbag2 through the real ssp_node over ROS topics and report on it.

The node runs as its own process (``python -m ssp_perception.ros.node``, as on a drone; with
``--in-process`` in this one, in its own rclpy context) and is fed over real topics, so QoS,
serialisation, the transport and the node's worker all take part:

- ``lockstep`` publishes frame k, waits for its ``labels`` and ``status`` (matched by header
  stamp), then publishes k+1: every frame is processed in order, deterministically.
- ``realtime`` publishes at the bag's recorded rate (times ``--rate``) with a camera-like
  best-effort QoS and measures what a drone would see: drops and latency.

With ``--compare`` (the default) the bag is replayed twice, in the namespaces ``/ssp`` (SSP)
and ``/image_model`` (temporal propagation off), and the report shows both side by side.
Everything goes to a temporary sibling of ``--out``, renamed into place only at the end, so an
interrupted or failed replay leaves no half-written bag or report. See ``docs/REPLAY.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Sequence

from .config import (BAD_FRAME_POLICIES, parse_param, REPLAY_MODES, ReplayConfig, ReplayError,
                     STORAGES, WriteError)
from .report import format_table
from .run import replay
from ...cli import ArgumentParser, run_main, UsageError
from ...files import OutputError


def build_parser() -> ArgumentParser:
    """Return the ``ssp_replay`` argument parser."""
    p = ArgumentParser(
        prog="ssp_replay", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", type=Path, help="input rosbag2 folder (sqlite3 or MCAP) or .mcap/.db3")
    p.add_argument("--image-topic", default="/camera/image_raw",
                   help="camera topic (sensor_msgs/Image or CompressedImage)")
    p.add_argument("--label-topic", default="",
                   help="ground-truth topic (mono8 train ids, same stamps); enables mIoU")
    p.add_argument("--out", type=Path, default=Path("replay_output"),
                   help="output folder (report.json, report.md, plots, video, bag/)")
    p.add_argument("--mode", choices=REPLAY_MODES, default="lockstep",
                   help="lockstep: every frame in order; realtime: at the bag's rate")
    p.add_argument("--rate", type=float, default=1.0,
                   help="realtime speed as a multiple of the recorded rate")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="also replay with temporal propagation off (image model alone)")
    p.add_argument("--params-file", type=Path, default=None,
                   help="ROS 2 parameter YAML for the node (e.g. config/uav.yaml)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="node parameter override, e.g. -p model_path:=weights/m.safetensors")
    p.add_argument("--frame-timeout", type=float, default=60.0,
                   help="lockstep: seconds to wait for one frame's output")
    p.add_argument("--on-bad-frame", choices=BAD_FRAME_POLICIES, default="fail",
                   help="a frame the node rejects (bad encoding, truncated data, NaN model "
                        "output): fail at once naming it, or skip it and count it in the report")
    p.add_argument("--max-frames", type=int, default=0, help="replay only the first N frames")
    p.add_argument("--storage", choices=STORAGES, default="same",
                   help="storage of the output bag")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-video", action="store_true", help="skip the side-by-side video")
    p.add_argument("--flow-preset", default="medium", choices=("ultrafast", "fast", "medium"),
                   help="DIS optical-flow preset used by the TC metric")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--in-process", action="store_true",
                   help="run ssp_node inside this process (starts faster; tests use it) "
                        "instead of as its own process")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain for the replay (default: ROS_DOMAIN_ID); a private one "
                        "keeps other nodes' traffic out")
    return p


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """Return the :class:`ReplayConfig` of parsed command-line arguments."""
    return ReplayConfig(
        bag=args.bag, image_topic=args.image_topic, label_topic=args.label_topic,
        out_dir=args.out, mode=args.mode, rate=args.rate, compare=args.compare,
        params=tuple(parse_param(t) for t in args.param), params_file=args.params_file,
        frame_timeout_s=args.frame_timeout, max_frames=args.max_frames, storage=args.storage,
        overwrite=args.overwrite, video=not args.no_video, flow_preset=args.flow_preset,
        progress=not args.no_progress, domain_id=args.domain_id, in_process=args.in_process,
        on_bad_frame=args.on_bad_frame)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ssp_replay``; print the summary table; return the exit status.

    Bad input exits 2 with one line, Ctrl-C 130 and SIGTERM 143 after the partial output was
    removed (:mod:`ssp_perception.cli`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        try:
            cfg = config_from_args(args)
        except ValueError as err:
            raise UsageError(str(err)) from None
        result = replay(cfg)
        print(format_table(result.report["modes"]))
        print(f"\n{outputs_line(cfg)} in {result.out_dir}")
        return 0

    return run_main(body, "ssp_replay", usage_errors=(ReplayError, OutputError),
                    runtime_errors=(WriteError,))


def outputs_line(cfg: ReplayConfig) -> str:
    """Return what the replay wrote: "report, plots, video and bag" (no video: --no-video)."""
    return "report, plots, video and bag" if cfg.video else "report, plots and bag"


if __name__ == "__main__":
    sys.exit(main())
