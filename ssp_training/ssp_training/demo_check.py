"""Check the demo checkpoint's acceptance criterion on an ``ssp_eval`` report.

The criterion (the issue's definition of done): on synthetic clips of a seed never used in
training, the SSP model reaches ``--min-miou`` mIoU and beats the same checkpoint without
propagation (its image model alone) by at least ``--min-tc-gain`` TC points, with mIoU at most
``--max-miou-drop`` points lower. Exit status 0 when met, 1 when not; ``--out`` writes both
rows' numbers and the verdict as JSON.

    python -m ssp_training.demo_check runs/synth_lite_ssp/eval/metrics.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from ssp_perception.files import atomic_write_json

from .eval.report import read_report

MIN_MIOU = 60.0
MIN_TC_GAIN = 10.0
MAX_MIOU_DROP = 0.5


def criterion(report: str | Path, min_tc_gain: float = MIN_TC_GAIN,
              max_miou_drop: float = MAX_MIOU_DROP, min_miou: float = MIN_MIOU
              ) -> dict[str, Any]:
    """Return the SSP and image-model rows of ``report`` and whether the criterion holds."""
    results, info = read_report(Path(report))
    ssp = [r for r in results if r.kind == "ssp" and r.extra.get("propagation", True)]
    image = [r for r in results if r.extra.get("propagation") is False]
    if len(ssp) != 1 or len(image) != 1:
        raise ValueError(f"{report}: expected one SSP row and one row without propagation "
                         f"(ssp_eval --with-image-model), found {[r.name for r in results]}")
    s, i = ssp[0], image[0]
    tc_gain, miou_delta = s.tc - i.tc, s.miou - i.miou
    met = s.miou >= min_miou and tc_gain >= min_tc_gain and miou_delta >= -max_miou_drop
    return {"ssp": {"miou": s.miou, "tc": s.tc}, "image_model": {"miou": i.miou, "tc": i.tc},
            "tc_gain": tc_gain, "miou_delta": miou_delta, "min_miou": min_miou,
            "min_tc_gain": min_tc_gain, "max_miou_drop": max_miou_drop, "met": met,
            "checkpoint": s.checkpoint,
            "frames": s.frames, "labelled_frames": s.labelled_frames,
            "settings": info.get("settings", {})}


def main(argv: list[str] | None = None) -> int:
    """Print the criterion for an ``ssp_eval`` report; return 0 if met, 1 if not."""
    p = argparse.ArgumentParser(prog="python -m ssp_training.demo_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("report", help="ssp_eval --json report with --with-image-model rows")
    p.add_argument("--min-miou", type=float, default=MIN_MIOU, help="mIoU SSP must reach")
    p.add_argument("--min-tc-gain", type=float, default=MIN_TC_GAIN,
                   help="TC points SSP must gain")
    p.add_argument("--max-miou-drop", type=float, default=MAX_MIOU_DROP,
                   help="mIoU points SSP may lose against its image model")
    p.add_argument("--out", default="", help="write the verdict as JSON here")
    args = p.parse_args(argv)
    try:
        verdict = criterion(args.report, args.min_tc_gain, args.max_miou_drop, args.min_miou)
    except (OSError, ValueError) as err:
        print(f"demo_check: error: {err}", file=sys.stderr)
        return 2
    s, i = verdict["ssp"], verdict["image_model"]
    print(f"image model alone: mIoU {i['miou']:.2f}  TC {i['tc']:.2f}\n"
          f"SSP:               mIoU {s['miou']:.2f}  TC {s['tc']:.2f} (need mIoU >= "
          f"{args.min_miou})\n"
          f"TC gain {verdict['tc_gain']:+.2f} (need >= {args.min_tc_gain}), mIoU change "
          f"{verdict['miou_delta']:+.2f} (need >= {-args.max_miou_drop}): "
          f"{'MET' if verdict['met'] else 'NOT MET'}")
    if args.out:
        atomic_write_json(args.out, verdict, sort_keys=False, indent=1)
    return 0 if verdict["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
