"""One streaming SSP step: a typed, resettable state and a pure step function (SSP_SPEC §2.7).

The node (``stream.Stream``), ``ssp_eval`` (``SSPPredictor``) and training validation
(``model_kinds``) all run a clip through :func:`advance`: state in, state out, nothing else
kept. One call

1. decides whether the state must be reset before this frame (:func:`reset_trigger`: a manual
   or first-frame reset, a resolution change, a camera (frame id) change, a stamp that went
   back or jumped by more than ``max_gap_s``);
2. gets the homography previous -> current: from the registrator, whose features of the
   previous frame travel in the state (each frame's features are computed once), or from the
   caller (ground truth, the identity ablation);
3. applies the registration-failure policy (``on_registration_failure``);
4. runs the network: the SSP step with state and a homography, the image step without;
5. flags non-finite output and never keeps it as state.

Decisions where the spec is silent:

* ``on_registration_failure="reset"`` is the default everywhere (the node, ``ssp_eval``,
  training validation). A failed registration means the camera moved too fast, the view changed
  or the image is blank. Fusing with the identity then smears the previous labels over the wrong
  pixels, and because the state is the fused output the error lingers for many frames. A reset
  is the spec's "fall back to s = 0" (§13): the frame gets the plain image output, which
  becomes the state, and the failed frame's features become the registration reference.
  "identity" reproduces the reference (spec §3.1 step 5) for parity evaluations.
* A frame whose supplied homography is None (a dataset without ``registration/<stem>.npy`` for
  it) is a failed registration, with the same policy.
* Non-finite logits: the result says so (``finite=False``) and the returned state is reset, so
  the poison never propagates. The node rejects such a frame; evaluation and validation raise
  :class:`NonFiniteOutputError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
import time
from typing import Any, Protocol

import numpy as np
import torch

from .geometry import rescale_homography
from .registration import FrameFeatures, RegistrationResult, Registrator

FAILURE_POLICIES = ("reset", "identity")
RESET_REASONS = ("", "first_frame", "manual", "time_backwards", "time_gap", "size_change",
                 "registration_failed", "frame_id_change")
NONFINITE_DETAIL = "non-finite model output on the previous frame"


class NonFiniteOutputError(ValueError):
    """The network returned NaN or inf logits: the weights (or the input) are broken."""


class StepNetwork(Protocol):
    """The two pure steps of an SSP model (a ``Backend`` or a ``Segmenter``)."""

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, feat) for a normalised (1, 3, H, W) image."""

    def ssp_step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor,
                 use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim) for one SSP step."""


@dataclass(frozen=True)
class StepConfig:
    """Configure the reset policy and propagation of :func:`advance`."""

    max_gap_s: float = 0.5
    """Reset when consecutive stamps are more than this many seconds apart (0 = never)."""
    reset_on_backwards: bool = True
    """Reset when a stamp is earlier than the previous one (bag loop, clock jump)."""
    reset_on_frame_id_change: bool = True
    """Reset when the frame id (e.g. the ROS header frame_id, i.e. the camera) changes."""
    propagate: bool = True
    """Fuse with the warped previous output. False runs the image step on every frame while
    registration still runs (its homography is reported): the image-model baseline."""
    on_registration_failure: str = "reset"
    """"reset" (drop the state, module docstring) or "identity" (fuse unaligned, reference)."""

    def __post_init__(self) -> None:
        if not isinstance(self.propagate, bool):
            raise ValueError(f"propagate must be true or false, got {self.propagate!r}")
        if self.on_registration_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_registration_failure {self.on_registration_failure!r} is not "
                             f"one of {', '.join(FAILURE_POLICIES)}")
        if not (isinstance(self.max_gap_s, (int, float)) and self.max_gap_s >= 0):
            raise ValueError(f"max_gap_s must be >= 0 seconds (0 disables the gap reset), "
                             f"got {self.max_gap_s!r}")


@dataclass(frozen=True)
class StepState:
    """Everything one stream carries from frame to frame; :func:`advance` returns a new one."""

    prev_logits: torch.Tensor | None = None
    """(1, C, h/r, w/r) fused logits of the previous frame (spec §2.7) at the model's fusion
    resolution: the network size (r = 1, spec fusion) or stride 4 (r = 4, the lite preset)."""
    prev_feat: torch.Tensor | None = None
    """(1, k, h/4, w/4) stage-1 embedding of the previous frame (the similarity block's input:
    the raw stage-1 features for the spec's blocks, k channels for "embed")."""
    prev_features: FrameFeatures | None = None
    """The registrator's keypoints and descriptors of the previous frame."""
    last_stamp: float | None = None
    """Stamp (s) of the last frame that carried one."""
    frame_size: tuple[int, int] | None = None
    """(H, W) of the previous input frame."""
    frame_id: str | None = None
    """Frame id of the previous frame."""
    frame_index: int = 0
    """Frames stepped since the state was created."""
    frames_since_reset: int = 0
    """Frames stepped since the last reset (0 on a reset frame)."""
    pending_reset: str = "first_frame"
    """Reason of a reset requested before the next frame ("" = none)."""
    pending_detail: str = ""
    """Human-readable detail of ``pending_reset``."""

    def reset(self, reason: str, detail: str = "") -> StepState:
        """Return this state without temporal memory; the next frame reports ``reason``."""
        if not reason:
            raise ValueError("reset reason must be a non-empty string")
        return replace(self, prev_logits=None, prev_feat=None, prev_features=None,
                       pending_reset=reason, pending_detail=detail)


@dataclass(frozen=True)
class StepResult:
    """What one :func:`advance` call computed for one frame."""

    logits: torch.Tensor
    """(1, C, h/r, w/r) fused (or, without state, image) logits at the fusion resolution."""
    similarity: torch.Tensor | None
    """(1, 1, h/r, w/r) SSP weight s of the warped previous output (None without state)."""
    homography: np.ndarray | None
    """(3, 3) previous -> current at the frame resolution, None without state; with
    ``propagate=False`` the one registration found (the network did not use it)."""
    registration: RegistrationResult | None
    """The registration attempt (None on reset frames, except a failed registration)."""
    used_state: bool
    """True when the previous output was propagated into this frame."""
    reset_reason: str
    """Why the state was reset before this frame ("" = not reset); see RESET_REASONS."""
    reset_detail: str
    """Human-readable detail of the reset (e.g. the gap length, the registration failure)."""
    frame_index: int
    """Index of this frame in the stream (0-based)."""
    frames_since_reset: int
    """Frames since the last reset (0 on a reset frame)."""
    finite: bool
    """False when the logits hold NaN or inf (the returned state was reset)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """registration and model (network step incl. warp and fusion) in milliseconds."""


def reset_trigger(state: StepState, cfg: StepConfig, size: tuple[int, int],
                  stamp: float | None, frame_id: str) -> tuple[str, str]:
    """Return (reason, detail) if the state must be reset before this frame, else ("", "")."""
    if state.pending_reset:
        return state.pending_reset, state.pending_detail
    if state.frame_size is not None and size != state.frame_size:
        return "size_change", f"{state.frame_size} -> {size}"
    if cfg.reset_on_frame_id_change and frame_id != state.frame_id:
        return "frame_id_change", f"{state.frame_id!r} -> {frame_id!r}"
    if stamp is not None and state.last_stamp is not None:
        dt = float(stamp) - state.last_stamp
        if dt < 0 and cfg.reset_on_backwards:
            return "time_backwards", f"stamp went back {-dt:.3f} s"
        if cfg.max_gap_s > 0 and dt > cfg.max_gap_s:
            return "time_gap", f"gap {dt:.3f} s > max_gap_s {cfg.max_gap_s}"
    return "", ""


def advance(net: StepNetwork, cfg: StepConfig, state: StepState, image: torch.Tensor, *,
            frame: np.ndarray | None = None, registrator: Registrator | None = None,
            homography: np.ndarray | None = None, frame_size: tuple[int, int] | None = None,
            stamp: float | None = None, frame_id: str = "",
            rescale: bool = True) -> tuple[StepState, StepResult]:
    """Step one frame; return (the next state, this frame's result).

    ``image`` is the normalised (1, 3, h, w) network input. The homography comes from
    ``registrator`` run on ``frame`` (uint8 RGB at the frame resolution) when one is given,
    else from ``homography`` (previous -> current at the frame resolution; None = unknown,
    handled as a failed registration). ``frame_size`` (H, W) defaults to ``frame``'s, else the
    network size. ``rescale`` maps the homography from the frame to the network resolution
    (False when the network input is the frame plus padding).
    """
    net_size = (int(image.shape[-2]), int(image.shape[-1]))
    size = _frame_size(frame_size, frame, net_size)
    reason, detail = reset_trigger(state, cfg, size, stamp, frame_id)
    if reason:
        state = state.reset(reason, detail)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    if registrator is not None:
        if frame is None:
            raise ValueError("a registrator needs the frame (uint8 RGB) to register")
        registration, features = registrator.register_from(state.prev_features, frame)
    else:
        registration, features = _supplied(homography), None
    timings["registration"] = _ms_since(t)
    h = None
    if state.prev_logits is not None:
        if registration.success:
            h = registration.homography
        elif cfg.on_registration_failure == "identity":
            h = np.eye(3)
        else:
            reason, detail = "registration_failed", registration.reason
            state = replace(state, prev_logits=None, prev_feat=None)
    if reason and reason != "registration_failed":
        registration = None

    t = time.perf_counter()
    step_h = h if cfg.propagate else None
    logits, feat, sim = _network(net, state, image, step_h, size, net_size, rescale)
    timings["model"] = _ms_since(t)
    finite = all_finite(logits)

    since = 0 if reason else state.frames_since_reset
    new_state = StepState(
        prev_logits=logits, prev_feat=feat, prev_features=features,
        last_stamp=float(stamp) if stamp is not None else state.last_stamp, frame_size=size,
        frame_id=frame_id, frame_index=state.frame_index + 1, frames_since_reset=since + 1,
        pending_reset="", pending_detail="")
    if not finite:
        new_state = new_state.reset("manual", NONFINITE_DETAIL)
    return new_state, StepResult(
        logits=logits, similarity=sim, homography=h, registration=registration,
        used_state=step_h is not None, reset_reason=reason, reset_detail=detail,
        frame_index=state.frame_index, frames_since_reset=since, finite=finite,
        timings_ms=timings)


def all_finite(x: torch.Tensor) -> bool:
    """Return True when ``x`` holds no NaN or inf.

    Tested on the sum: NaN and inf propagate into it, and it costs 0.02 ms on lite's stride-4
    logits where ``isfinite(x).all()`` costs 1 ms. Only finite values summing past 3e38 (1e33
    each, a broken model anyway) would be called non-finite.
    """
    return math.isfinite(float(x.float().sum()))


def _network(net: StepNetwork, state: StepState, image: torch.Tensor, h: np.ndarray | None,
             size: tuple[int, int], net_size: tuple[int, int], rescale: bool):
    """Run the SSP step with state and a homography, the image step otherwise."""
    if h is None:
        logits, feat = net.image_step(image)
        return logits, feat, None
    if rescale and size != net_size:
        h = rescale_homography(h, size, net_size)
    h_t = torch.as_tensor(h, dtype=torch.float32, device=image.device).unsqueeze(0)
    use_prev = torch.ones(1, device=image.device)
    return net.ssp_step(image, state.prev_logits, state.prev_feat, h_t, use_prev)


def _supplied(homography: Any) -> RegistrationResult:
    """Return a caller-supplied homography as a registration result."""
    if homography is None:
        return RegistrationResult(np.eye(3), success=False,
                                  reason="no homography supplied for this frame")
    h = np.asarray(homography, dtype=np.float64)
    if h.shape != (3, 3):
        raise ValueError(f"homography must be 3x3, got shape {h.shape}")
    return RegistrationResult(h, success=True)


def _frame_size(size: tuple[int, int] | None, frame: np.ndarray | None,
                net_size: tuple[int, int]) -> tuple[int, int]:
    if size is not None:
        return (int(size[0]), int(size[1]))
    if frame is not None:
        return (int(frame.shape[0]), int(frame.shape[1]))
    return net_size


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


__all__ = ["FAILURE_POLICIES", "NONFINITE_DETAIL", "NonFiniteOutputError", "RESET_REASONS",
           "StepConfig", "StepNetwork", "StepResult", "StepState", "advance", "all_finite",
           "reset_trigger"]
