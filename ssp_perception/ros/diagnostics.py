"""The node's per-stream ``/diagnostics`` entry: rates, latencies, silence and transport loss."""

from __future__ import annotations

from dataclasses import replace
import math
from typing import Any

from . import conversions
from .worker import StreamWorker, window_values


def transport_loss_text(worker: StreamWorker, st: Any, elapsed: float) -> str:
    """Return the warning for frames that never reached the node, with what to do."""
    rate = 1.0 / st.input_period_s if st.input_period_s > 0 else math.nan
    sent = st.window_missing + st.window_received
    return (f"{worker.stream_id}: {st.window_missing} of {sent} frames in the last "
            f"{elapsed:.1f} s never arrived (publisher ~{rate:.1f} Hz, input reliability "
            f"{worker.input.describe()}): transport loss before the node. Subscribe reliable "
            f"to a reliable camera (input_reliability auto or reliable) and give the camera "
            f"driver's process the transport profile config/fastdds_large_frames.xml "
            f"(docs/NODE.md, Transport)")


def stream_diagnostic(name: str, worker: StreamWorker, now: float, input_timeout_s: float,
                      clock_has_time: bool) -> Any:
    """Return the DiagnosticStatus of one stream for the period since the last call.

    Takes (and so resets) the worker's statistics window; warns, throttled, when the stream
    is silent or frames never arrived.
    """
    silent_s = now - worker.stats.last_receive
    silent = silent_s > input_timeout_s
    if silent:
        # Before the first frame the node is waiting, not starved: say so, and for whom.
        text = (f"no input for {silent_s:.1f} s" if worker.stats.received
                else f"waiting for the first frame for {silent_s:.1f} s "
                     f"({worker.input.publishers})")
        worker.warn("no_input", f"{worker.stream_id}: {text}")
    st, frames, elapsed = worker.take_window()
    if st.window_missing:   # this period's frames: reported here, not in the next period
        loss = transport_loss_text(worker, st, elapsed)
        worker.warn("transport_loss", loss, record=False)
        st = replace(st, window_warnings=[*st.window_warnings, loss], last_warning=loss)
    values = window_values(st, frames, elapsed)
    values["seconds_since_input"] = silent_s
    values["input_reliability"] = worker.input.describe()
    values["input_publishers"] = worker.input.publishers
    if not clock_has_time:
        values["input_age_note"] = ("the node clock has no time yet (use_sim_time is true "
                                    "and no /clock was received): input ages are unknown")
    if silent:
        level, message = "warn", text
    elif st.window_warnings:
        level, message = "warn", st.window_warnings[-1]
    else:
        level = "ok"
        message = (f"{values['input_rate_hz']:.1f} Hz in, "
                   f"{values['output_rate_hz']:.1f} Hz out")
    return conversions.diagnostic_status(name, worker.stream_id, level, message, values)
