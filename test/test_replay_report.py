"""Replay evaluation without ROS: flow TC, flip rate, summaries, report files, plots, video."""

import json
import math
import warnings

import cv2
import numpy as np
import pytest

from ssp_perception.ros.replay.render import (flicker_color, PLOT_FILES, SideBySideVideo,
                                              write_plots)
from ssp_perception.ros.replay.report import (decode_labels, encode_labels, Evaluator,
                                              FlowConsistency, format_table, FrameRecord,
                                              jsonable, ModeRun, Palette, percentiles,
                                              render_markdown, StatusSample, write_report)

PALETTE = Palette(("a", "b", "c", "d"),
                  np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]))
H, W, STEP = 64, 96, 3


def _world(seed=0):
    """Return a textured world image and its 4-class label map, larger than one frame."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (H // 8 + 4, W // 8 + 8, 3), dtype=np.uint8)
    rgb = cv2.resize(small, (W + 64, H + 32), interpolation=cv2.INTER_CUBIC)
    rgb = cv2.add(rgb, rng.integers(0, 40, rgb.shape, dtype=np.uint8))  # fine texture for flow
    labels = (cv2.GaussianBlur(rgb, (0, 0), 3)[..., 1] // 64).astype(np.uint8)
    return rgb, labels


def _clip(n=5):
    """Return n frames panning right by STEP px per frame, and their true labels."""
    rgb, labels = _world()
    return ([rgb[8:8 + H, STEP * i:STEP * i + W].copy() for i in range(n)],
            [labels[8:8 + H, STEP * i:STEP * i + W].copy() for i in range(n)])


def _status(i, **kw):
    base = {"frame_index": i, "temporal_state_used": i > 0,
            "reset_reason": "first_frame" if i == 0 else "none", "registration_success": True,
            "tc_estimate": 0.9, "label_flip_rate": 0.05, "similarity_mean": 0.5,
            "mean_confidence": 0.8, "total_ms": 20.0, "model_ms": 12.0,
            "registration_ms": 4.0, "fuse_ms": 2.0, "frames_dropped": 0}
    base.update(kw)
    return StatusSample(**base)


def _video_frames(path):
    """Return every frame of the video at ``path`` (BGR arrays), in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            return frames
        frames.append(img)


def _run(name, label_maps, drop=(), **status_kw):
    records = []
    for i, lab in enumerate(label_maps):
        rec = FrameRecord(stamp_ns=i * 100, sent_s=float(i))
        if i not in drop:
            rec.labels_png, rec.received_s = encode_labels(lab), i + 0.01 * (i + 1)
            rec.status = _status(i, **status_kw)
        records.append(rec)
    return ModeRun(name, records, wall_s=float(len(label_maps)))


def test_palette_rejects_mismatched_colours_and_colours_ignore_black():
    with pytest.raises(ValueError, match="one RGB colour per class"):
        Palette(("a", "b"), np.zeros((3, 3)))
    out = PALETTE.colorize(np.array([[0, 3, 255]], np.uint8))
    assert out.tolist() == [[[255, 0, 0], [255, 255, 0], [0, 0, 0]]]


def test_label_png_round_trip():
    labels = np.random.default_rng(1).integers(0, 4, (H, W), dtype=np.uint8)
    labels[0, 0] = 255
    assert np.array_equal(decode_labels(encode_labels(labels)), labels)


def test_flow_warp_aligns_a_panning_camera():
    frames, labels = _clip(2)
    tc_meter = FlowConsistency("medium")
    flow = tc_meter.flow(frames[0], frames[1])
    # The camera pans right, so frame-0 pixels appear STEP px further left in frame 1.
    assert np.median(flow[..., 0]) == pytest.approx(-STEP, abs=0.5)
    tc, flips = tc_meter.pair(labels[0], labels[1], flow, PALETTE)
    assert tc > 0.9 and flips < 0.05
    # Without the warp the same pair looks much less consistent: the metric sees motion.
    no_flow = np.zeros_like(flow)
    tc_raw, flips_raw = tc_meter.pair(labels[0], labels[1], no_flow, PALETTE)
    assert tc_raw < tc - 0.1 and flips_raw > flips + 0.05


def test_pixels_warped_out_of_view_are_ignored():
    flow = np.zeros((4, 6, 2), np.float32)
    flow[..., 0] = 10.0  # every pixel leaves the frame
    warped = FlowConsistency.warp_back(np.zeros((4, 6), np.uint8), flow, 255)
    assert (warped == 255).all()
    tc, flips = FlowConsistency().pair(np.zeros((4, 6), np.uint8), np.zeros((4, 6), np.uint8),
                                       flow, PALETTE)
    assert math.isnan(tc) and math.isnan(flips)


def test_evaluator_ranks_stable_over_flickering_predictions():
    frames, labels = _clip(5)
    rng = np.random.default_rng(3)
    noisy = [np.where(rng.random(lab.shape) < 0.2, (lab + 1) % 4, lab).astype(np.uint8)
             for lab in labels]
    runs = [_run("image_model", noisy), _run("ssp", labels)]
    ev = Evaluator(runs, PALETTE)
    for i, rgb in enumerate(frames):
        out = ev.update(i, rgb, labels[i] if i % 2 == 0 else None)
        assert np.array_equal(out["ssp"], labels[i])
    ssp, img = ev.summary(runs[1]), ev.summary(runs[0])
    assert ssp["tc_pairs"] == img["tc_pairs"] == 4
    assert ssp["tc"] > img["tc"] + 0.1 and ssp["flip_rate"] < img["flip_rate"]
    assert ssp["miou"] == pytest.approx(1.0) and img["miou"] < 0.9
    assert ssp["labelled_frames"] == 3
    assert ssp["dropped"] == 0 and ssp["frames_out"] == 5
    assert ssp["tc_online"] == pytest.approx(0.9)
    assert ssp["registration_success_rate"] == pytest.approx(1.0)
    assert ssp["resets"] == 0 and ssp["reset_reasons"] == {}


def test_drops_skip_frames_and_pairs_span_the_gap():
    frames, labels = _clip(5)
    run = _run("ssp", labels, drop=(2,))
    ev = Evaluator([run], PALETTE)
    for i, rgb in enumerate(frames):
        ev.update(i, rgb, None)
    s = ev.summary(run)
    assert s["frames_out"] == 4 and s["dropped"] == 1
    # Pairs (0,1), (1,3), (3,4): consecutive outputs, the flow spanning the dropped frame.
    assert [i for i, _ in ev.series("ssp")["tc"]] == [1, 3, 4]
    assert s["tc"] > 0.85
    assert math.isnan(s["miou"]) and s["iou_per_class"] == {}


def test_a_resolution_change_ends_the_pairs_and_the_video_keeps_its_size(tmp_path):
    frames, labels = _clip(5)
    # Frames 3 and 4 come at half the resolution (a camera reconfigured mid-flight).
    half = [cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for f in frames[3:]]
    small = [cv2.resize(lab, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
             for lab in labels[3:]]
    frames, labels = frames[:3] + half, labels[:3] + small
    run = _run("ssp", labels)
    ev = Evaluator([run], PALETTE)
    video = SideBySideVideo(tmp_path / "v.mp4", 10.0, PALETTE, ["ssp"], ground_truth=True,
                            height=64)
    for i, rgb in enumerate(frames):
        out = ev.update(i, rgb, labels[i])
        assert out["ssp"].shape == rgb.shape[:2]
        video.write(rgb, out, labels[i], ev.flicker())
    video.close()
    s = ev.summary(run)
    # Pairs (0,1), (1,2), (3,4): no flow between a 64x96 and a 32x48 frame.
    assert [i for i, _ in ev.series("ssp")["tc"]] == [1, 2, 4] and s["tc_pairs"] == 3
    assert s["miou"] == pytest.approx(1.0) and s["labelled_frames"] == 5
    sizes = [img.shape[:2] for img in _video_frames(tmp_path / "v.mp4")]
    assert len(sizes) == 5 and len(set(sizes)) == 1


def test_resets_and_registration_failures_are_counted():
    _, labels = _clip(4)
    run = _run("ssp", labels)
    run.records[2].status = _status(
        2, reset_reason="registration_failed", registration_success=False)
    run.records[3].status = _status(3, reset_reason="time_gap")
    ev = Evaluator([run], PALETTE)
    s = ev.summary(run)
    assert s["resets"] == 2
    assert s["reset_reasons"] == {"registration_failed": 1, "time_gap": 1}
    assert s["registration_success_rate"] == pytest.approx(2 / 3)


def test_evaluator_rejects_runs_of_different_length():
    _, labels = _clip(3)
    with pytest.raises(ValueError, match="different frame counts"):
        Evaluator([_run("ssp", labels), _run("image_model", labels[:2])], PALETTE)


def test_percentiles_ignore_nan_and_handle_empty():
    p = percentiles([10.0, math.nan, 20.0, 30.0])
    assert p["p50"] == pytest.approx(20.0) and p["mean"] == pytest.approx(20.0)
    assert all(math.isnan(v) for v in percentiles([]).values())


def _report(modes):
    return {"input": {"bag": "/b", "storage": "mcap", "image_topic": "/camera/image_raw",
                      "label_topic": None, "frames": 5},
            "replay": {"mode": "lockstep", "rate": 1.0}, "model": {"model_id": "m@1"},
            "modes": modes, "files": {"report_json": "report.json"}}


def test_report_files_are_standard_json_and_markdown(tmp_path):
    frames, labels = _clip(3)
    runs = [_run("image_model", labels), _run("ssp", labels)]
    ev = Evaluator(runs, PALETTE)
    for i, rgb in enumerate(frames):
        ev.update(i, rgb, None)
    modes = {r.name: ev.summary(r) for r in runs}
    write_report(tmp_path, _report(modes))
    data = json.loads((tmp_path / "report.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["modes"]["ssp"]["miou"] is None  # NaN (no ground truth) becomes null
    assert data["modes"]["ssp"]["latency_ms"]["p50"] == pytest.approx(20.0)
    md = (tmp_path / "report.md").read_text()
    assert "| TC |" in md and "| mIoU | n/a | n/a |" in md
    assert not list(tmp_path.glob("*.tmp"))
    table = format_table(jsonable(modes))
    assert table.splitlines()[0] == "| metric | image_model | ssp |"
    assert "| FPS |" in render_markdown(jsonable(_report(modes)))


def test_flicker_marks_the_labels_that_changed_after_motion_compensation():
    frames, labels = _clip(3)
    noisy = [lab.copy() for lab in labels]
    noisy[2][20:30, 40:60] = (noisy[2][20:30, 40:60] + 1) % 4  # flips in frame 2 only
    ev = Evaluator([_run("image_model", noisy), _run("ssp", labels)], PALETTE)
    ev.update(0, frames[0], None)
    assert ev.flicker() == {"image_model": None, "ssp": None}  # no previous frame yet
    ev.update(1, frames[1], None)
    ev.update(2, frames[2], None)
    (mask, rate), (clean, clean_rate) = ev.flicker()["image_model"], ev.flicker()["ssp"]
    assert rate == ev.series("image_model")["flip_rate"][-1][1] and rate > clean_rate
    # The view pans right by STEP px a frame: frame 2's block sits STEP px further right in
    # frame 1, where the flow pulls it back to. Pixels that only moved are not marked.
    assert mask[21:29, 41 + STEP:59 + STEP].mean() > 0.9
    assert clean[21:29, 41 + STEP:59 + STEP].mean() < 0.1
    assert clean.mean() < 0.05


def test_plots_and_side_by_side_video(tmp_path):
    frames, labels = _clip(4)
    runs = [_run("image_model", labels), _run("ssp", labels, drop=(1,))]
    ev = Evaluator(runs, PALETTE)
    video = SideBySideVideo(tmp_path / "v.mp4", 10.0, PALETTE, ["image_model", "ssp"],
                            ground_truth=True, height=64)
    for i, rgb in enumerate(frames):
        gt = labels[i] if i != 2 else None  # a frame without labels shows an empty GT tile
        video.write(rgb, ev.update(i, rgb, gt), gt, ev.flicker())
    video.close()
    written = _video_frames(tmp_path / "v.mp4")
    assert len(written) == 4
    frame = written[-1]
    # Top: input | ground truth | image model | SSP; bottom: legend | key | flicker | flicker.
    assert frame.shape[0] == 2 * 64 and frame.shape[1] == 4 * 96
    legend = cv2.cvtColor(frame[64:, :96], cv2.COLOR_BGR2RGB).reshape(-1, 3)
    for color in PALETTE.colors:  # every class's swatch is drawn (codec noise aside)
        assert (np.abs(legend.astype(int) - color).max(axis=1) < 40).sum() > 20
    flicker = cv2.cvtColor(frame[64:, 2 * 96:3 * 96], cv2.COLOR_BGR2RGB).reshape(-1, 3)
    assert flicker_color(PALETTE) == (0, 255, 255)  # the colour least like any of PALETTE
    assert (np.abs(flicker.astype(int) - (0, 255, 255)).max(axis=1) < 60).sum() < 0.2 * 64 * 96
    plain = SideBySideVideo(tmp_path / "p.mp4", 10.0, PALETTE, ["ssp"], height=64)
    plain.write(frames[0], {"ssp": labels[0]})
    plain.close()
    cap = cv2.VideoCapture(str(tmp_path / "p.mp4"))
    ok, img = cap.read()
    assert ok and img.shape[:2] == (2 * 64, 2 * 96)  # no labels in the bag: no GT column
    names = write_plots(tmp_path, runs, {r.name: ev.series(r.name) for r in runs})
    assert sorted(names) == sorted(PLOT_FILES.values())
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_plots_of_a_one_frame_bag_warn_about_nothing(tmp_path):
    # One frame: a latency bar but no TC pair, so the TC and flip-rate plots have no curve.
    _, labels = _clip(1)
    runs = [_run("ssp", labels)]
    ev = Evaluator(runs, PALETTE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # matplotlib's "No artists with labels" included
        names = write_plots(tmp_path, runs, {"ssp": ev.series("ssp")})
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)
