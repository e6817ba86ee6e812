"""Benchmarks of ssp_node on real topics: per-frame overhead and behaviour under overload.

Run them with ``ssp_bench node-overhead`` and ``ssp_bench node-overload`` (``ssp_perception.tools
.bench``); each returns a JSON-able dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
import math
import os
from pathlib import Path
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from ssp_msgs.msg import SegmentationStatus
from std_msgs.msg import Header
import torch

from . import conversions
from .node import SegmentationNode
from ..artifact import save_artifact
from ..classes import UAVID
from ..config import preset as make_preset
from ..models import create_model
from ..synthetic import synthetic_frames


class BenchRig:
    """A node on real topics with subscribers on every output, spun by a background thread."""

    def __init__(self, artifact: Path, encoding: str = "rgb8",
                 node_params: dict[str, Any] | None = None) -> None:
        self.context = rclpy.Context()
        # A DDS domain of this process alone: other nodes on the machine use the same names.
        # No rclpy signal handlers: ssp_bench's (ssp_perception.cli) end it with 130/143.
        rclpy.init(context=self.context, domain_id=1 + os.getpid() % 100,
                   signal_handler_options=SignalHandlerOptions.NO)
        # Frames are paced by the node itself here, so their spacing is its processing time:
        # no gap reset (stream.max_gap_s = 0), as with a camera at the node's rate.
        params = {"stream.max_gap_s": 0.0, **(node_params or {}), "model_path": str(artifact)}
        self.node = SegmentationNode(
            "ssp_node_bench", context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.worker = next(iter(self.node.workers.values()))
        self.worker.trace = []
        self.probe = rclpy.create_node("ssp_bench_probe", context=self.context)
        self.encoding = encoding
        self.sent_at: dict[int, float] = {}       # stamp (ns) -> monotonic send time
        self.latency_ms: list[float] = []         # send -> labels received, per labels message
        self._lock = threading.Lock()
        self.statuses = 0
        # Raw (serialized) subscriptions: the probe shares the process, and deserialising four
        # images per frame would charge its cost to the node's publish time.
        for name in ("color", "overlay", "confidence"):
            self.probe.create_subscription(Image, name, lambda msg: None, 1, raw=True)
        self.probe.create_subscription(Image, "labels", self._on_labels, 1, raw=True)
        self.probe.create_subscription(SegmentationStatus, "status", self._on_status, 10,
                                       raw=True)
        self.pub = self.probe.create_publisher(Image, "image", qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self._wait(lambda: all(p.get_subscription_count() > 0 for p in self.node.publishers
                               if p.topic_name.endswith(("labels", "color", "overlay",
                                                         "confidence", "status")))
                   and self.worker.subscription.get_publisher_count() > 0, 30.0)

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: B902 - shutdown races end the loop
                return

    def _on_labels(self, raw: bytes) -> None:
        now = time.monotonic()
        key = conversions.cdr_stamp_ns(raw)
        with self._lock:
            sent = self.sent_at.pop(key, None)
            if sent is not None:
                self.latency_ms.append((now - sent) * 1e3)

    def _on_status(self, raw: bytes) -> None:
        with self._lock:
            self.statuses += 1

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.005)
        return predicate()

    def send(self, frame: np.ndarray) -> None:
        """Publish ``frame`` stamped with the node clock now."""
        stamp = self.probe.get_clock().now()
        header = Header(stamp=stamp.to_msg(), frame_id="camera")
        image = frame if self.encoding == "rgb8" else np.ascontiguousarray(frame[:, :, ::-1])
        msg = conversions.array_to_msg(image, "rgb8", header)
        msg.encoding = self.encoding
        with self._lock:
            self.sent_at[stamp.nanoseconds] = time.monotonic()
        self.pub.publish(msg)

    def send_and_wait(self, frame: np.ndarray, timeout: float = 60.0) -> None:
        """Publish ``frame`` and wait until its status arrived (one frame in flight)."""
        with self._lock:
            before = self.statuses
        self.send(frame)
        if not self._wait(lambda: self.statuses > before, timeout):
            raise RuntimeError("benchmark: the node did not answer a frame within "
                               f"{timeout:.0f} s")

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the worker has nothing waiting or in progress."""
        self._wait(self.worker.idle, timeout)
        time.sleep(0.2)   # let the last outputs reach the probe

    def close(self) -> None:
        """Shut everything down."""
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(5.0)


def _bench_artifact(preset_name: str, checkpoint: str | None, tmpdir: str) -> Path:
    """Return ``checkpoint`` or a freshly saved randomly initialised model of ``preset_name``."""
    if checkpoint:
        return Path(checkpoint)
    torch.manual_seed(0)
    path = Path(tmpdir) / f"{preset_name}_random.safetensors"
    save_artifact(path, create_model(make_preset(preset_name)), UAVID,
                  provenance={"recipe": "benchmark: random init"})
    return path


def _bench_frames(size: Sequence[int], n: int) -> list[np.ndarray]:
    """Return ``n`` frames of smooth camera motion that loop back and forth (no jump)."""
    base = [f for f, _ in synthetic_frames((int(size[0]), int(size[1])), max(2, min(n, 60)))]
    loop = base + base[-2:0:-1]        # forth and back: consecutive frames always overlap
    return [loop[k % len(loop)] for k in range(n)]


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def benchmark_node_overhead(preset: str = "lite", size: Sequence[int] = (360, 640),
                            frames: int = 50, checkpoint: str | None = None,
                            encoding: str = "rgb8", warmup: int = 3,
                            node_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the node's per-frame overhead over the segmenter step (medians, milliseconds).

    Frames of ``size`` (H, W) go through real topics, one at a time, with subscribers on every
    output so that all of them are built and published. ``conversion_ms`` is ROS image ->
    RGB array, ``publish_ms`` building and publishing labels, color, overlay, confidence and
    status, ``segmenter_ms`` the core's ``Stream.process``;
    ``node_overhead_ratio = (conversion_ms + publish_ms) / segmenter_ms``. Without
    ``checkpoint`` a randomly initialised model of ``preset`` is used (same cost).
    ``node_params`` overrides node parameters (e.g. ``{"num_threads": 1}``).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rig = BenchRig(_bench_artifact(preset, checkpoint, tmp), encoding, node_params)
        try:
            sequence = _bench_frames(size, frames + warmup)
            for frame in sequence[:warmup]:
                rig.send_and_wait(frame)
            rig.wait_idle()
            rig.worker.trace.clear()
            for frame in sequence[warmup:warmup + frames]:
                rig.send_and_wait(frame)
            rig.wait_idle()
            records = list(rig.worker.trace)
        finally:
            rig.close()
    segmenter = _median([r.segmenter_ms for r in records])
    conversion = _median([r.decode_ms for r in records])
    publish = _median([r.publish_ms for r in records])
    return {
        "preset": preset, "size": [int(size[0]), int(size[1])], "frames": len(records),
        "encoding": encoding, "checkpoint": checkpoint or "(random init)",
        "segmenter_ms": segmenter, "conversion_ms": conversion, "publish_ms": publish,
        "node_overhead_ms": conversion + publish,
        "node_overhead_ratio": (conversion + publish) / segmenter,
        "receive_to_status_ms": _median([r.latency_ms for r in records]),
        "node_params": node_params or {},
        "outputs": ["labels", "color", "overlay", "confidence", "status"],
    }


def benchmark_node_overload(preset: str = "lite", size: Sequence[int] = (360, 640),
                            duration_s: float = 60.0, rate_factor: float = 3.0,
                            checkpoint: str | None = None, idle_frames: int = 20,
                            node_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return latency, memory and frame accounting with input ``rate_factor`` x throughput.

    First ``idle_frames`` are sent one at a time: the idle latency (send -> labels received)
    and the processing time per frame P give the throughput 1/P. Then frames are published
    at ``rate_factor / P`` for ``duration_s`` seconds. The result says whether the 95th
    percentile latency stayed within two processing times of the idle median
    (``latency_within_2_frames``), how resident memory moved, and whether every frame the node
    received was published or counted (``accounted``). The publisher runs in the node's
    process (as a camera driver in the same container would).
    """
    import tempfile

    import psutil

    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        rig = BenchRig(_bench_artifact(preset, checkpoint, tmp), node_params=node_params)
        try:
            sequence = _bench_frames(size, 60)
            for frame in sequence[:3]:
                rig.send_and_wait(frame)
            rig.wait_idle()
            rig.latency_ms.clear()
            rig.worker.trace.clear()
            for k in range(idle_frames):
                rig.send_and_wait(sequence[k % len(sequence)])
            rig.wait_idle()
            idle_latency = list(rig.latency_ms)
            processing_ms = _median([r.latency_ms for r in rig.worker.trace])
            period = processing_ms / 1e3 / rate_factor
            with rig._lock:
                rig.latency_ms.clear()
            stats0 = replace(rig.worker.stats, window=[], window_warnings=[])
            labels0 = rig.statuses
            rss = [(0.0, process.memory_info().rss / 2 ** 20)]
            start = next_send = time.monotonic()
            sent = 0
            while time.monotonic() - start < duration_s:
                rig.send(sequence[sent % len(sequence)])
                sent += 1
                now = time.monotonic()
                if now - start >= rss[-1][0] + 1.0:
                    rss.append((now - start, process.memory_info().rss / 2 ** 20))
                next_send += period
                time.sleep(max(0.0, next_send - time.monotonic()))
            elapsed = time.monotonic() - start
            rig.wait_idle()
            stats = rig.worker.stats
            with rig._lock:
                overload_latency = list(rig.latency_ms)
                published = rig.statuses - labels0
        finally:
            rig.close()
    received = stats.received - stats0.received
    processed = stats.processed - stats0.processed
    dropped = stats.dropped - stats0.dropped
    rejected = stats.rejected - stats0.rejected
    idle_p50 = _median(idle_latency)
    p95 = float(np.percentile(overload_latency, 95)) if overload_latency else math.nan
    times, mem = np.array([t for t, _ in rss]), np.array([m for _, m in rss])
    late = times >= times[-1] / 2
    slope = (float(np.polyfit(times[late], mem[late], 1)[0]) * 60.0
             if late.sum() >= 3 else math.nan)
    return {
        "preset": preset, "size": [int(size[0]), int(size[1])], "duration_s": elapsed,
        "rate_factor": rate_factor, "processing_ms": processing_ms,
        "input_rate_hz": sent / elapsed, "throughput_hz": 1e3 / processing_ms,
        "frames_sent": sent, "frames_received": received, "frames_processed": processed,
        "frames_dropped": dropped, "frames_rejected": rejected, "status_published": published,
        "lost_in_transport": sent - received,
        "accounted": received == processed + dropped + rejected,
        "idle_latency_p50_ms": idle_p50,
        "latency_p50_ms": _median(overload_latency), "latency_p95_ms": p95,
        "latency_max_ms": max(overload_latency, default=math.nan),
        "latency_bound_ms": idle_p50 + 2 * processing_ms,
        "latency_within_2_frames": bool(p95 <= idle_p50 + 2 * processing_ms),
        "rss_start_mb": float(mem[0]), "rss_end_mb": float(mem[-1]),
        "rss_max_mb": float(mem.max()), "rss_growth_mb": float(mem[-1] - mem[0]),
        "rss_slope_second_half_mb_per_min": slope,
        "rss_every_10s_mb": [round(float(m), 1) for t, m in rss if round(t) % 10 == 0],
        "node_params": node_params or {},
    }
