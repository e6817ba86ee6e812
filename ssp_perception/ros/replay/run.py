"""One ssp_replay run: validate the bag, replay it per mode, evaluate, commit the outputs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import errno
from pathlib import Path
import shutil
import time
from typing import Any, Iterator

import numpy as np
import rclpy
from rclpy.signals import SignalHandlerOptions

from .bag import BagIndex, BagRecorder, BagSource
from .config import IMAGE_MODEL_OVERRIDES, node_parameters, ReplayConfig
from .config import ReplayError, WriteError
from .driver import NodeRun
from .process import make_params_dir, remove_stale_params_dirs
from .render import PLOT_FILES, SideBySideVideo, VIDEO_FILE, write_plots
from .report import (decode_labels, Evaluator, FrameRecord, jsonable, ModeRun, ordered_modes,
                     Palette, write_report)
from ..conversions import IMAGE_TYPE
from ...files import check_can_create, check_output_target, staged_dir
from ...progress import progress_bar

BAG_NAME = "bag"
TOOL = "ssp_replay"


@dataclass
class ReplayResult:
    """Return value of :func:`replay`: the finished output folder and the report dict."""

    out_dir: Path
    report: dict[str, Any]
    runs: dict[str, ModeRun]


def _run_mode(name: str, cfg: ReplayConfig, source: BagSource, index: BagIndex,
              context: Any, recorder: BagRecorder, params_dir: Path) -> tuple[ModeRun, Any]:
    run = NodeRun(context, f"/{name}", node_parameters(cfg, name), recorder,
                  realtime=cfg.mode == "realtime", first_log_ns=index.log_times[0],
                  in_process=cfg.in_process, params_dir=params_dir, domain_id=cfg.domain_id)
    try:
        run.wait_for_connections()
        class_info = run.wait_class_info()
        # Ground truth outside the node's classes fails now, not after the whole replay.
        source.check_label_ids(index, len(class_info.class_names), int(class_info.ignore_index))
        records: list[FrameRecord] = []
        bar = progress_bar(total=index.frames, desc=f"{name} ({cfg.mode})", unit="frame",
                           disable=not cfg.progress, dynamic_ncols=True, mininterval=0.5)
        start = time.monotonic()
        t0, log0 = start, index.log_times[0]
        for frame in source.frames(index):
            if frame.bad:   # --on-bad-frame skip: a frame the replay cannot read itself
                records.append(FrameRecord(frame.stamp_ns, rejected=frame.bad,
                                           rejected_detail=frame.detail))
                bar.update(1)
                continue
            if cfg.mode == "realtime":
                delay = t0 + (frame.log_ns - log0) / 1e9 / cfg.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            record = run.publish(frame)
            records.append(record)
            if cfg.mode == "lockstep" and not run.wait(record, cfg.frame_timeout_s):
                bar.write(f"[ssp_replay] {name}: no output for frame {frame.index} "
                          f"(stamp {frame.stamp_ns} ns) within {cfg.frame_timeout_s:.0f} s")
            if cfg.on_bad_frame == "fail":
                _fail_on_rejection(name, frame.index, records, run)
            bar.update(1)
            if record.labels_png is not None:
                bar.set_postfix(latency_ms=f"{record.latency_ms:.0f}", refresh=False)
        bar.close()
        run.drain(records, timeout_s=cfg.frame_timeout_s)
        if cfg.on_bad_frame == "fail":
            _fail_on_rejection(name, len(records) - 1, records, run)
        done = [r.received_s for r in records if r.labels_png is not None]
        wall = (max(done) if done else time.monotonic()) - start
        return ModeRun(name, records, wall), class_info
    finally:
        run.close()


def _fail_on_rejection(mode: str, index: int, records: list[FrameRecord], run: NodeRun) -> None:
    """Raise ReplayError naming the first frame up to ``index`` that the node rejected."""
    with run.lock:
        bad = next((k for k, r in enumerate(records[:index + 1]) if r.rejected), None)
        if bad is None:
            return
        record = records[bad]
        raise ReplayError(f"{mode}: ssp_node rejected frame {bad} (stamp {record.stamp_ns} ns): "
                          f"{record.rejected_detail or record.rejected}; pass --on-bad-frame "
                          f"skip to replay the other frames and count such frames in the report")


def _palette(class_info: Any) -> Palette:
    colors = np.asarray(class_info.palette_rgb, np.uint8).reshape(-1, 3)
    return Palette(tuple(class_info.class_names), colors, int(class_info.ignore_index))


def _evaluate(cfg: ReplayConfig, source: BagSource, index: BagIndex, runs: dict[str, ModeRun],
              palette: Palette, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    names = ordered_modes(runs)
    evaluator = Evaluator([runs[n] for n in names], palette, cfg.flow_preset)
    video = (SideBySideVideo(out_dir / VIDEO_FILE, index.rate_hz, palette, names,
                             ground_truth=bool(index.labels)) if cfg.video else None)
    try:
        frames = progress_bar(source.frames(index), total=index.frames, desc="evaluate",
                              unit="frame", disable=not cfg.progress, dynamic_ncols=True,
                              mininterval=0.5)
        rejected = {k for run in runs.values() for k, r in enumerate(run.records)
                    if r.rejected}
        for frame in frames:
            if frame.bad:
                continue   # --on-bad-frame skip: counted as rejected already
            try:
                rgb = source.rgb(frame)
            except ReplayError:
                if frame.index in rejected:
                    continue   # --on-bad-frame skip: the node refused it too; counted already
                raise
            png = index.labels.get(frame.stamp_ns)
            gt = decode_labels(png) if png is not None else None
            labels = evaluator.update(frame.index, rgb, gt)
            if video is not None:
                video.write(rgb, labels, gt, evaluator.flicker())
    finally:
        if video is not None:
            video.close()
    summaries = {n: evaluator.summary(runs[n]) for n in names}
    series = {n: evaluator.series(n) for n in names}
    return summaries, series


def replay(cfg: ReplayConfig) -> ReplayResult:
    """Replay the bag through the node in each mode and write the outputs into ``cfg.out_dir``.

    Raise :class:`ReplayError` for an unusable bag or node set-up and
    :class:`~ssp_perception.files.OutputError` for an ``out_dir`` the replay may not write
    (``overwrite`` replaces only an earlier ssp_replay output). Nothing is left behind on
    failure or interruption: outputs appear in ``cfg.out_dir`` only once all are complete.
    """
    out_dir = check_output_target(cfg.out_dir.resolve(), TOOL, cfg.overwrite, "--overwrite",
                                  _legacy_output)
    check_can_create(out_dir, "--out", cfg.out_dir)
    modes = ("ssp", "image_model") if cfg.compare else ("ssp",)
    for mode in modes:  # bad parameters fail here, before the bag is read
        node_parameters(cfg, mode)
    source = BagSource(cfg)
    index = source.index()
    # What replays killed with kill -9 left (their node processes died with them); their
    # staging folders go in staged_dir.
    remove_stale_params_dirs()
    params_dir = make_params_dir()  # node parameter files
    try:
        with _writing(cfg.out_dir), staged_dir(out_dir, TOOL, cfg.overwrite, "--overwrite",
                                               _legacy_output) as tmp:
            report, runs = _replay_into(tmp, cfg, source, index, modes, params_dir)
        return ReplayResult(out_dir, jsonable(report), runs)
    finally:
        shutil.rmtree(params_dir, ignore_errors=True)


@contextlib.contextmanager
def _writing(given: Path) -> Iterator[None]:
    """Turn an OS error while writing the outputs (a full disk) into one WriteError line."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise WriteError(f"cannot write --out {given}: {err.strerror or err}") from None


# Errors of writing to a file system that has no room or no longer takes writes.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def _legacy_output(path: Path) -> bool:
    # Outputs of ssp_replay from before the marker file: a report and the output bag.
    return (path / "report.json").is_file() and (path / BAG_NAME).is_dir()


def _replay_into(tmp: Path, cfg: ReplayConfig, source: BagSource, index: BagIndex,
                 modes: tuple[str, ...],
                 params_dir: Path) -> tuple[dict[str, Any], dict[str, ModeRun]]:
    """Run every mode and write bag, report, plots and video into the staging folder."""
    context = rclpy.Context()
    recorder = None
    try:
        storage = index.storage if cfg.storage == "same" else cfg.storage
        recorder = BagRecorder(tmp / BAG_NAME, storage, shown_as=cfg.out_dir / BAG_NAME)
        _copy_inputs(cfg, source, index, recorder)
        # No rclpy signal handlers: ssp_perception.cli's raise Interrupted here, so that the
        # staging folder is removed (files.staged_dir) before the tool exits 130/143.
        # args: the tool's name only; rcl would read the user's -p name:=value as remap rules.
        rclpy.init(args=[TOOL], context=context, domain_id=cfg.domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        runs: dict[str, ModeRun] = {}
        class_info = None
        for name in modes:
            runs[name], class_info = _run_mode(name, cfg, source, index, context, recorder,
                                               params_dir)
        recorder.close()
        recorder = None
        palette = _palette(class_info)
        summaries, series = _evaluate(cfg, source, index, runs, palette, tmp)
        files = {"bag": BAG_NAME, "report_json": "report.json", "report_md": "report.md"}
        files.update({f"plot_{k}": v for k, v in PLOT_FILES.items()})
        write_plots(tmp, [runs[n] for n in summaries], series)
        if cfg.video:
            files["video"] = VIDEO_FILE
        report = _report(cfg, index, class_info, summaries, files)
        write_report(tmp, report)
        return report, runs
    finally:
        if recorder is not None:
            try:
                recorder.close()
            except Exception:  # the bag is being thrown away; its close error is moot
                pass
        if context.ok():
            rclpy.shutdown(context=context)


def _copy_inputs(cfg: ReplayConfig, source: BagSource, index: BagIndex,
                 recorder: BagRecorder) -> None:
    # The input frames (and ground truth) go into the output bag too, so it plays on its own.
    recorder.add(cfg.image_topic, IMAGE_TYPE)
    for frame in source.frames(index):
        if not frame.bad:   # --on-bad-frame skip: nothing publishable to record
            recorder.write(cfg.image_topic, frame.log_ns, frame.cdr)
    if cfg.label_topic:
        recorder.add(cfg.label_topic, IMAGE_TYPE)
        log_of = dict(zip(index.stamps, index.log_times))
        for stamp, cdr in source.label_messages(index):
            recorder.write(cfg.label_topic, log_of[stamp], cdr)


def _report(cfg: ReplayConfig, index: BagIndex, class_info: Any,
            summaries: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    return {
        "version": 1,
        "input": {"bag": str(cfg.bag), "storage": index.storage,
                  "image_topic": cfg.image_topic, "image_type": index.image_type,
                  "label_topic": cfg.label_topic or None, "frames": index.frames,
                  "labelled_frames": len(index.labels),
                  "unmatched_labels": index.unmatched_labels, "rate_hz": index.rate_hz},
        "replay": {"mode": cfg.mode, "rate": cfg.rate, "compare": cfg.compare,
                   "node_process": "in-process" if cfg.in_process else "own process",
                   "frame_timeout_s": cfg.frame_timeout_s, "flow_preset": cfg.flow_preset,
                   "node_parameters": node_parameters(cfg, "ssp"),
                   "image_model_overrides": IMAGE_MODEL_OVERRIDES if cfg.compare else {}},
        "model": {"model_id": class_info.model_id, "preset": class_info.preset,
                  "class_set": class_info.class_set,
                  "input_size": [int(class_info.input_height), int(class_info.input_width)]},
        "classes": list(class_info.class_names),
        "modes": summaries,
        "files": files,
    }
