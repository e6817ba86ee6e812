"""The per-stream worker of ssp_node: one-slot mailbox filled by a callback, drained by a thread.

The executor thread only calls :meth:`StreamWorker.offer` (store the message, replacing and
counting a frame not taken yet: the latest-frame policy). The worker thread decodes, runs
``Stream.process``, publishes and records the frame's numbers for the diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
import math
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.node import Node
from std_msgs.msg import Header

from . import conversions
from .frame_loss import FrameLossCounter
from .input_qos import QoSRequestedIncompatibleQoSInfo
from ..encodings import blend, colorize, confidence_to_mono8, EncodingError
from ..registration import RegistrationConfig
from ..stream import FrameResult, Stream, StreamConfig
from ..streaming import NONFINITE_DETAIL

# Resets caused by the input itself: worth a warning. first_frame, manual and
# registration_failed (fast motion, blank views) are normal operation and only counted.
WARN_RESETS = ("time_backwards", "time_gap", "size_change", "frame_id_change")
# Latency percentiles in diagnostics use at most this many frames of the last period.
WINDOW_FRAMES = 1000


@dataclass
class FrameStats:
    """Per-frame numbers the diagnostics aggregate over one period."""

    latency_ms: float
    decode_ms: float
    segmenter_ms: float
    publish_ms: float
    registration_success: bool | None
    tc_estimate: float
    flip_rate: float


@dataclass
class StreamStats:
    """Counters and the current diagnostics window of one stream (guarded by the worker lock)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    missing: int = 0
    """Frames that never arrived (gaps of whole publisher periods): transport loss."""
    input_period_s: float = math.nan
    """Publisher frame period estimated from the stamps; NaN until known."""
    resets: int = 0
    qos_incompatible: int = 0
    last_receive: float = 0.0
    last_input_age_ms: float = math.nan
    last_reset: str = ""
    last_warning: str = ""
    window: list[FrameStats] = field(default_factory=list)
    window_received: int = 0
    window_dropped: int = 0
    window_rejected: int = 0
    window_missing: int = 0
    window_resets: int = 0
    window_warnings: list[str] = field(default_factory=list)
    window_start: float = 0.0


@dataclass
class Outputs:
    """Publishers of one stream; None where the output is disabled."""

    status: Any
    labels: Any = None
    color: Any = None
    overlay: Any = None
    confidence: Any = None
    rejected: Any = None
    """`rejected`: one DiagnosticArray per rejected frame, stamped with the frame's header."""

    def publishers(self) -> list[Any]:
        """Return the publishers that exist (status first)."""
        return [p for p in (self.status, self.labels, self.color, self.overlay,
                            self.confidence) if p is not None]


class StreamWorker:
    """Run one camera stream: a one-slot mailbox filled by the callback, drained by a thread."""

    def __init__(self, node: Node, stream_id: str, stream: Stream, outputs: Outputs,
                 decode: Callable[[Any], np.ndarray]) -> None:
        self.node = node
        self.stream_id = stream_id
        self.stream = stream
        self.outputs = outputs
        self._decode = decode
        self._cond = threading.Condition()
        self._pending: tuple[Any, float] | None = None
        self._busy = False
        self._stopping = False
        self._reset_note: str | None = None          # set by the executor, read by the worker
        self._new_configs: tuple[StreamConfig, RegistrationConfig] | None = None
        self._state_note = ""                        # why the worker reset its own stream
        self._last_publish_ms = 0.0
        self._buffers = {name: conversions.ImageBuffer(encoding) for name, encoding in (
            ("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
            ("confidence", "mono8"))}
        self._warned_at: dict[str, float] = {}
        self.stats = StreamStats(last_receive=time.monotonic(), window_start=time.monotonic())
        self._loss = FrameLossCounter()
        self.input: Any = None          # the InputSubscription (set by the node)
        self.trace: list[FrameStats] | None = None   # benchmarks: every frame's record
        self._thread: threading.Thread | None = None

    # -- called from the executor thread ----------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (again after :meth:`stop`: a managed node's activate)."""
        with self._cond:
            self._stopping = False
            self.stats.last_receive = time.monotonic()   # input timeout counts from now
        self._thread = threading.Thread(target=self._run, name=f"ssp_stream{self.stream_id}",
                                        daemon=True)
        self._thread.start()

    @property
    def subscription(self) -> Any:
        """Return the current input subscription; auto QoS may re-create it."""
        return None if self.input is None else self.input.subscription

    def offer(self, msg: Any) -> None:
        """Make ``msg`` the next frame, dropping (and counting) one the worker has not taken.

        Frames missing between this one and the previous (by their stamps) are counted apart:
        those never reached the node.
        """
        now = time.monotonic()
        with self._cond:
            st = self.stats
            st.received += 1
            st.window_received += 1
            st.last_receive = now
            missing = self._loss.add(conversions.stamp_seconds(msg.header.stamp))
            st.missing += missing
            st.window_missing += missing
            st.input_period_s = self._loss.period_s
            if self._pending is not None:
                st.dropped += 1
                st.window_dropped += 1
            self._pending = (msg, now)
            self._cond.notify()

    def request_reset(self, note: str) -> None:
        """Reset the temporal state before the next frame (the worker applies it)."""
        with self._cond:
            self._reset_note = note

    def request_reconfigure(self, stream_cfg: StreamConfig,
                            registration: RegistrationConfig) -> None:
        """Rebuild the stream with new configs before the next frame (resets its state)."""
        with self._cond:
            self._new_configs = (stream_cfg, registration)

    def on_incompatible_qos(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        """Count and report a publisher whose QoS cannot match this stream's subscription."""
        policy = getattr(info.last_policy_kind, "name", str(info.last_policy_kind))
        with self._cond:
            self.stats.qos_incompatible = info.total_count
        self.warn("qos", f"{self.stream_id}: a publisher offers QoS incompatible with this "
                         f"subscription (policy {policy}; {info.total_count} so far); see "
                         f"the qos_overrides parameters")

    def idle(self) -> bool:
        """Return True when no frame is waiting or being processed."""
        with self._cond:
            return self._pending is None and not self._busy

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the frame in progress; a waiting frame counts as dropped."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            if self._pending is not None:
                self._pending = None
                self.stats.dropped += 1
                self.stats.window_dropped += 1

    def take_window(self) -> tuple[StreamStats, list[FrameStats], float]:
        """Return a copy of the counters, the period's frames and its length; start a new one."""
        now = time.monotonic()
        with self._cond:
            st = self.stats
            snapshot = replace(st, window=[], window_warnings=list(st.window_warnings))
            frames, elapsed = st.window, max(now - st.window_start, 1e-9)
            st.window, st.window_warnings, st.window_start = [], [], now
            st.window_received = st.window_dropped = st.window_rejected = 0
            st.window_missing = 0
            st.window_resets = 0
        return snapshot, frames, elapsed

    def warn(self, key: str, text: str, record: bool = True) -> None:
        """Log ``text`` at most once per warn_throttle_s per key; record it for diagnostics.

        ``record=False`` leaves the diagnostics window alone (the caller reports it itself).
        """
        now = time.monotonic()
        with self._cond:
            self.stats.last_warning = text
            if record:
                self.stats.window_warnings.append(text)
            last = self._warned_at.get(key)
            due = last is None or now - last >= self.node.config.warn_throttle_s
            if due:
                self._warned_at[key] = now
        if due:
            self.node.get_logger().warning(text)

    # -- the worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                (msg, t_recv), self._pending = self._pending, None
                self._busy = True
            try:
                self._apply_requests()
                self._handle(msg, t_recv)
            except Exception as err:  # noqa: B902 - a bad frame must never kill the stream
                if not self.node.context.ok():
                    return   # shutting down (Ctrl-C): publishing fails, nothing to report
                self._reject("internal_error", f"{type(err).__name__}: {err}", msg.header)
                # A bug, not bad input: the traceback is what its report needs.
                self.node.get_logger().error(
                    f"{self.stream_id}: unexpected error while processing a frame:\n"
                    f"{traceback.format_exc()}",
                    throttle_duration_sec=self.node.config.warn_throttle_s)
            finally:
                with self._cond:
                    self._busy = False

    def _apply_requests(self) -> None:
        with self._cond:
            note, self._reset_note = self._reset_note, None
            configs, self._new_configs = self._new_configs, None
        if configs is not None:
            self.stream = self.node.segmenter.new_stream(*configs)
            note = note or "parameters changed"
        if note is not None:
            self.stream.reset("manual")
            self._state_note = note

    def _handle(self, msg: Any, t_recv: float) -> None:
        t0 = time.perf_counter()
        try:
            image = self._decode(msg)
        except EncodingError as err:
            self._reject(err.reason, str(err), msg.header)
            return
        decode_ms = _ms_since(t0)
        stamp = conversions.stamp_seconds(msg.header.stamp)
        now_ns = self.node.get_clock().now().nanoseconds
        # A clock at 0 has no time yet (use_sim_time and no /clock): no age, not -stamp.
        age_ms = math.nan if stamp is None or now_ns == 0 else now_ns * 1e-6 - stamp * 1e3
        try:
            result = self.stream.process(image, stamp, msg.header.frame_id)
        except ValueError as err:   # the core refuses the frame (e.g. smaller than 8 px)
            self._reject("bad_image", str(err), msg.header)
            return
        if not result.finite:   # the shared step flagged it and already dropped the state
            self._state_note = NONFINITE_DETAIL
            self._reject("nonfinite_output", "model output contains NaN or inf; the stream's "
                         "state was reset and the frame was not published", msg.header)
            return
        self._note_reset(result)
        t_pub = time.perf_counter()
        self._publish_visuals(msg.header, image, result)
        counters = self._counters()
        status = conversions.status_msg(
            result, msg.header, self.stream_id, counters=counters, decode_ms=decode_ms,
            publish_ms=self._last_publish_ms, total_ms=(time.monotonic() - t_recv) * 1e3,
            input_age_ms=age_ms, input_period_ms=counters.pop("input_period_ms"))
        if result.reset_reason == "manual" and self._state_note:
            status.reset_detail = self._state_note
        status.lifecycle_state = self.node.lifecycle_state
        self.outputs.status.publish(status)
        self._last_publish_ms = _ms_since(t_pub)
        self._record(result, status.total_ms, decode_ms, age_ms)

    def _publish_visuals(self, header: Header, image: np.ndarray, result: FrameResult) -> None:
        """Build (in the outputs' own message buffers) and publish what someone subscribes to."""
        out, bufs, cfg = self.outputs, self._buffers, self.node.config
        size = result.labels.shape

        def wanted(pub: Any) -> bool:
            return pub is not None and pub.get_subscription_count() > 0

        if wanted(out.labels):
            np.copyto(bufs["labels"].pixels(*size), result.labels)
            out.labels.publish(bufs["labels"].message(header))
        want_color, want_overlay = wanted(out.color), wanted(out.overlay)
        if want_color or want_overlay:
            color = colorize(result.labels, self.node.palette,
                             out=bufs["color"].pixels(*size))        # (H, W, 3)
            if want_color:
                out.color.publish(bufs["color"].message(header))
            if want_overlay:
                blend(image, color, cfg.overlay_alpha, out=bufs["overlay"].pixels(*size))
                out.overlay.publish(bufs["overlay"].message(header))
        if wanted(out.confidence) and result.confidence is not None:
            confidence_to_mono8(result.confidence, out=bufs["confidence"].pixels(*size))
            out.confidence.publish(bufs["confidence"].message(header))

    def _counters(self) -> dict[str, int]:
        with self._cond:
            st = self.stats
            return {"frame_index": st.processed, "frames_received": st.received,
                    "frames_processed": st.processed + 1, "frames_dropped": st.dropped,
                    "frames_rejected": st.rejected, "frames_missing": st.missing,
                    "input_period_ms": st.input_period_s * 1e3}

    def _note_reset(self, result: FrameResult) -> None:
        if not result.reset_reason:
            return
        with self._cond:
            self.stats.resets += 1
            self.stats.window_resets += 1
            self.stats.last_reset = f"{result.reset_reason}: {result.reset_detail}".rstrip(": ")
        if result.reset_reason in WARN_RESETS:
            self.warn(result.reset_reason, f"{self.stream_id}: temporal state reset "
                      f"({result.reset_reason}: {result.reset_detail})")
        if result.reset_reason != "manual":
            self._state_note = ""

    def _record(self, result: FrameResult, latency_ms: float, decode_ms: float,
                age_ms: float) -> None:
        reg = result.registration
        record = FrameStats(
            latency_ms=latency_ms, decode_ms=decode_ms,
            segmenter_ms=float(result.timings_ms.get("total", math.nan)),
            publish_ms=self._last_publish_ms,
            registration_success=None if reg is None else bool(reg.success),
            tc_estimate=float(result.tc_estimate), flip_rate=float(result.flip_rate))
        with self._cond:
            st = self.stats
            st.processed += 1
            st.last_input_age_ms = age_ms
            if len(st.window) < WINDOW_FRAMES:
                st.window.append(record)
            if self.trace is not None:
                self.trace.append(record)

    def _reject(self, reason: str, text: str, header: Header) -> None:
        with self._cond:
            self.stats.rejected += 1
            self.stats.window_rejected += 1
            rejected = self.stats.rejected
        line = f"{self.stream_id}: frame rejected ({reason}): {text}"
        self.warn(reason, line)
        if self.outputs.rejected is not None:
            # At once, with the frame's own header: a consumer waiting for this frame's
            # outputs (ssp_replay's lockstep) learns now that none will come, and why.
            status = conversions.diagnostic_status(
                f"{self.node.get_fully_qualified_name()}: {self.stream_id}", self.stream_id,
                "error", line, {"reason": reason, "frames_rejected": rejected})
            self.outputs.rejected.publish(DiagnosticArray(header=header, status=[status]))


# ---- The node ------------------------------------------------------------------------------


def window_values(st: StreamStats, frames: list[FrameStats],
                  elapsed: float) -> dict[str, Any]:
    """Return the diagnostic key/values of one stream for one period."""
    def pct(values: Sequence[float], q: float) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.percentile(finite, q)) if finite else math.nan

    def mean(values: Sequence[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    latency = [f.latency_ms for f in frames]
    attempts = [f.registration_success for f in frames if f.registration_success is not None]
    return {
        "input_rate_hz": st.window_received / elapsed,
        "output_rate_hz": len(frames) / elapsed,
        "input_age_ms": st.last_input_age_ms,
        "frames_received": st.received, "frames_processed": st.processed,
        "frames_dropped": st.dropped, "frames_rejected": st.rejected,
        "dropped_in_period": st.window_dropped, "rejected_in_period": st.window_rejected,
        "frames_missing": st.missing, "missing_in_period": st.window_missing,
        "input_period_ms": st.input_period_s * 1e3,
        "latency_p50_ms": pct(latency, 50), "latency_p90_ms": pct(latency, 90),
        "latency_p99_ms": pct(latency, 99), "latency_max_ms": max(latency, default=math.nan),
        "segmenter_p50_ms": pct([f.segmenter_ms for f in frames], 50),
        "decode_p50_ms": pct([f.decode_ms for f in frames], 50),
        "publish_p50_ms": pct([f.publish_ms for f in frames], 50),
        "registration_success_rate": (sum(attempts) / len(attempts)) if attempts else math.nan,
        "tc_estimate": mean([f.tc_estimate for f in frames]),
        "flip_rate": mean([f.flip_rate for f in frames]),
        "resets": st.resets, "resets_in_period": st.window_resets,
        "last_reset": st.last_reset, "qos_incompatible_events": st.qos_incompatible,
        "warnings_in_period": len(st.window_warnings), "last_warning": st.last_warning,
    }


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
