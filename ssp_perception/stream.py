"""Streaming SSP inference: one shared network, explicit per-stream state, automatic resets.

``Segmenter`` owns the backend (the weights, shared by every stream and guarded by a lock) and
the class metadata. ``Stream`` owns one camera's temporal state (``StreamState``) and turns
frames into ``FrameResult``s (SSP_SPEC §2.7):

1. preprocess: resize (or pad) the RGB frame to the network size, normalise;
2. step (``streaming.advance``): reset triggers, the homography previous -> current frame at
   the input resolution from the previous frame's features, then ``ssp_step`` (warp the previous
   fused logits and stage-1 embedding, fuse) with state or ``image_step`` without;
3. postprocess: labels, confidence and similarity back at the exact input resolution;
4. online consistency: the previous labels warped into this frame and compared (TC estimate).

Step 2 is the one streaming step ``ssp_eval`` and training validation run too; this module adds
the camera side around it.

Decisions where the spec is silent:

* The state holds the **fused** logits exactly as the step returns them (spec §2.7), in the
  dtype the backend returns: at the network resolution for models that fuse there (the spec's
  default; at 736x1280 with 8 classes 30 MB in float32, plus 22.6 MB of stride-4 Hiera-S
  features), at stride 4 for models that fuse there (``upsample_before_mixing=False``, the lite
  preset: 0.47 MB of logits plus 0.23 MB of 4-channel embeddings at 384x640). Stride-4 logits are
  upsampled to the network size with the model's own mode (bicubic) in postprocessing, for the
  image step and the SSP step alike.
* Registration failure, resets and non-finite output: see ``streaming``.
* Resizing: ``cv2.INTER_AREA`` when shrinking (antialiased, like the PIL bilinear the training
  data loader uses), ``INTER_LINEAR`` when enlarging. Labels default to the argmax at the network
  resolution resized with ``INTER_NEAREST_EXACT``: the argmax of bilinearly upsampled logits
  (``label_upsampling="bilinear"``) has sharper edges but, measured here at 384x640 -> 720x1280
  with 8 classes on 2 CPU threads, costs ~45 ms against ~1 ms, as much as the lite network.
  Confidence and similarity are computed at the network resolution and resized bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import threading
import time
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .backends import Backend, create_backend
from .classes import ClassSet, IGNORE_INDEX
from .config import IMAGENET_MEAN, IMAGENET_STD, MAX_SIDE, SIZE_MULTIPLE
from .geometry import rescale_homography
from .metrics import flip_rate, pair_miou
from .models.image_model import SeparableResize
from .models.ssp import upsample_similarity
from .registration import create_registrator, RegistrationConfig, RegistrationResult
from .streaming import advance, FAILURE_POLICIES, RESET_REASONS, StepConfig, StepState

RESIZE_MODES = ("resize", "pad")
LABEL_UPSAMPLING = ("nearest", "bilinear")


@dataclass(frozen=True)
class StreamConfig:
    """Configure one stream: network input geometry, reset triggers and optional outputs."""

    input_size: tuple[int, int] | None = None
    """Network (H, W), multiples of 32; None = the model's. Ignored when resize_mode is "pad"."""
    resize_mode: str = "resize"
    """"resize": scale frames to input_size; "pad": keep native scale, pad to multiples of 32."""
    max_gap_s: float = 0.5
    """Reset when consecutive stamps are more than this many seconds apart (0 = never)."""
    reset_on_backwards: bool = True
    """Reset when a stamp is earlier than the previous one (bag loop, clock jump)."""
    reset_on_frame_id_change: bool = True
    """Reset when the frame id (e.g. the ROS header frame_id, i.e. the camera) changes."""
    propagate: bool = True
    """Fuse with the warped previous output (SSP). False runs the image model alone on every
    frame while registration, the online TC estimate and flip rate still run: the baseline for
    comparisons (``ssp_replay --compare``)."""
    on_registration_failure: str = "reset"
    """"reset" (drop the state: this frame gets the image output) or "identity" (fuse
    unaligned, as the reference); see ``streaming``."""
    compute_confidence: bool = True
    """Return the max-softmax confidence map (float32 0..1, input resolution)."""
    compute_similarity: bool = False
    """Return the SSP similarity map s (float32 0..1, input resolution; zeros without state)."""
    label_upsampling: str = "nearest"
    """Labels at the input size: "nearest" (argmax at network size, then resized; fast) or
    "bilinear" (argmax of logits resized bilinearly: sharper edges, ~C x the memory traffic)."""
    return_logits: bool = False
    """Return the fused logits (C, h, w) at network resolution (for evaluation)."""
    consistency_scale: float = 0.25
    """Scale of the label maps compared for the online TC estimate (0 = don't estimate)."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"StreamConfig: {msg}")

        if self.input_size is not None:
            size = self.input_size
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(_is_int(v) and 0 < v <= MAX_SIDE and v % SIZE_MULTIPLE == 0
                               for v in size)):
                fail(f"input_size must be None or (H, W) with positive multiples of "
                     f"{SIZE_MULTIPLE} up to {MAX_SIDE}, got {size!r}")
            object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        try:
            self.step_config()
        except ValueError as err:
            fail(str(err))
        if self.resize_mode not in RESIZE_MODES:
            fail(f"resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.label_upsampling not in LABEL_UPSAMPLING:
            fail(f"label_upsampling {self.label_upsampling!r} is not one of "
                 f"{', '.join(LABEL_UPSAMPLING)}")
        if not (isinstance(self.consistency_scale, (int, float))
                and 0.0 <= self.consistency_scale <= 1.0):
            fail(f"consistency_scale must be in [0, 1] (0 disables the TC estimate), "
                 f"got {self.consistency_scale!r}")

    def step_config(self) -> StepConfig:
        """Return the reset policy and propagation settings of the streaming step."""
        return StepConfig(max_gap_s=self.max_gap_s, reset_on_backwards=self.reset_on_backwards,
                          reset_on_frame_id_change=self.reset_on_frame_id_change,
                          propagate=self.propagate,
                          on_registration_failure=self.on_registration_failure)


@dataclass(frozen=True)
class StreamState:
    """Hold what one stream carries from frame to frame; replaced, never accumulated."""

    step: StepState = field(default_factory=StepState)
    """The streaming step's state: fused logits, embedding, registration features, stamps."""
    prev_labels: np.ndarray | None = None
    """Previous labels at ``consistency_scale`` (uint8), for the online TC estimate."""

    @property
    def prev_logits(self) -> torch.Tensor | None:
        """Return the previous fused logits (see ``StepState.prev_logits``)."""
        return self.step.prev_logits

    @property
    def prev_feat(self) -> torch.Tensor | None:
        """Return the previous stage-1 embedding (see ``StepState.prev_feat``)."""
        return self.step.prev_feat


@dataclass
class FrameResult:
    """Describe one processed frame; label-like maps are at the input frame's resolution."""

    labels: np.ndarray
    """(H, W) uint8 class ids."""
    confidence: np.ndarray | None
    """(H, W) float32 max softmax probability in [0, 1] (None if not computed)."""
    similarity: np.ndarray | None
    """(H, W) float32 SSP weight s of the warped previous output (None if not computed)."""
    logits: np.ndarray | None
    """(C, h, w) float32 fused logits at network resolution, padding cropped (if asked)."""
    homography: np.ndarray | None
    """(3, 3) previous -> current at input resolution that the step used (None without state)."""
    registration: RegistrationResult | None
    """The registration attempt for this frame (None on reset frames)."""
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
    flip_rate: float
    """Share of co-visible pixels whose label changed from the warped previous frame (or nan)."""
    tc_estimate: float
    """Online TC: pair mIoU of these labels and the warped previous labels, 0..1 (or nan)."""
    mean_confidence: float
    """Mean of ``confidence`` (nan if not computed, or if the model output is not finite)."""
    network_size: tuple[int, int]
    """(h, w) the network ran at."""
    finite: bool = True
    """False when the model output held NaN or inf (the state was reset; reject the frame)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """preprocess, registration, model (network step incl. warp and fusion), postprocess,
    consistency and total, in milliseconds."""


class Segmenter:
    """Own one backend (shared weights) and its class metadata; hand out streams.

    Thread-safe: streams on different threads share the backend through a lock around every
    network call. A single ``Stream`` is not thread-safe; give each camera its own.
    """

    def __init__(self, model: Any, class_set: ClassSet, *, backend: str = "torch",
                 device: str = "cpu", dtype: str = "float32",
                 input_size: tuple[int, int] | None = None,
                 mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None,
                 upsample_mode: str | None = None, **backend_kw: Any) -> None:
        cfg = getattr(model, "cfg", None)
        if isinstance(model, torch.nn.Module):
            self.backend: Backend = create_backend(backend, model, device=device, dtype=dtype,
                                                   **backend_kw)
        elif isinstance(model, Backend):
            self.backend = model
        else:
            raise TypeError(f"model must be an SSPModel (nn.Module) or a Backend, "
                            f"got {type(model).__name__}")
        if class_set.num_classes != self.backend.num_classes:
            raise ValueError(f"class set {class_set.name!r} has {class_set.num_classes} classes "
                             f"but the model predicts {self.backend.num_classes}")
        self.class_set = class_set
        self.input_size = _pick_size(input_size, self.backend.input_size,
                                     getattr(cfg, "input_size", None))
        self.upsample_mode = str(upsample_mode or getattr(cfg, "upsample_mode", "bicubic"))
        """How stride-4 step logits are brought to the network size (the model's own mode)."""
        self.mean = tuple(mean or getattr(cfg, "mean", IMAGENET_MEAN))
        self.std = tuple(std or getattr(cfg, "std", IMAGENET_STD))
        self._lock = threading.Lock()
        self._resizers: dict[tuple[tuple[int, int], tuple[int, int]], SeparableResize] = {}
        dev = self.backend.device
        self._mean_t = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1) * 255.0
        self._std_t = torch.tensor(self.std, device=dev).view(1, 3, 1, 1) * 255.0

    @classmethod
    def from_artifact(cls, path: str | Path, backend: str = "torch", device: str = "cpu",
                      dtype: str = "float32", **kw: Any) -> Segmenter:
        """Load an artifact and wrap it; ``kw`` goes to the backend (e.g. ``compile=True``)."""
        from .artifact import read_meta

        meta = read_meta(path)
        engine = create_backend(backend, path, device=device, dtype=dtype, **kw)
        return cls(engine, meta.class_set, input_size=tuple(meta.input_size),
                   mean=tuple(meta.mean), std=tuple(meta.std),
                   upsample_mode=meta.model.upsample_mode)

    @property
    def num_classes(self) -> int:
        """Return the number of classes the model predicts."""
        return self.class_set.num_classes

    def new_stream(self, cfg: StreamConfig | None = None,
                   registration: RegistrationConfig | None = None) -> Stream:
        """Return a new stream with its own state, sharing this segmenter's weights."""
        return Stream(self, cfg or StreamConfig(), registration or RegistrationConfig())

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """Return the (1, 3, H, W) float32 normalised tensor of an (H, W, 3) uint8 RGB image."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.backend.device)
        x = x.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, H, W) in 0..255
        # (x - mean) / std in float32, bit for bit what ssp_eval and the training data compute.
        return (x - self._mean_t) / self._std_t

    def network_logits(self, logits: torch.Tensor, net_size: tuple[int, int]) -> torch.Tensor:
        """Return step logits (B, C, h, w) at the network size ``net_size`` (H, W).

        Stride-4 logits (models that fuse at stride 4) are upsampled with the model's mode;
        logits already at that size come back unchanged. Uses :class:`SeparableResize` (two
        MatMuls, ~1e-6 from ``F.interpolate``, 3x faster than PyTorch's CPU bicubic kernel),
        cached per (input, output) size.
        """
        src = (int(logits.shape[-2]), int(logits.shape[-1]))
        dst = (int(net_size[0]), int(net_size[1]))
        if src == dst:
            return logits
        key = (src, dst)
        resize = self._resizers.get(key)
        if resize is None:
            if len(self._resizers) >= 8:  # a few sizes per process; never grows without bound
                self._resizers.clear()
            resize = SeparableResize(src, dst, self.upsample_mode).to(logits.device)
            self._resizers[key] = resize
        return resize(logits.float())

    def image_step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the backend's image step under the shared lock."""
        with self._lock:
            out = self.backend.image_step(x)
            self.backend.synchronize()
        return out

    def ssp_step(self, x: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor, use_prev: torch.Tensor):
        """Run the backend's SSP step under the shared lock."""
        with self._lock:
            out = self.backend.ssp_step(x, prev_logits, prev_feat, homography, use_prev)
            self.backend.synchronize()
        return out


class Stream:
    """Segment one camera's frames in order, propagating state with SSP (not thread-safe)."""

    def __init__(self, segmenter: Segmenter, cfg: StreamConfig,
                 registration: RegistrationConfig) -> None:
        self.segmenter = segmenter
        self.cfg = cfg
        self.step_cfg = cfg.step_config()
        self.registration_cfg = registration
        self.registrator = create_registrator(registration)
        self.state = StreamState()

    def reset(self, reason: str = "manual") -> None:
        """Drop the temporal state now; the next frame reports ``reason`` ("manual" default)."""
        self.state = StreamState(self.state.step.reset(reason, "requested by reset()"))

    def process(self, image: np.ndarray, stamp: float | None = None,
                frame_id: str = "") -> FrameResult:
        """Segment one (H, W, 3) uint8 RGB frame taken at ``stamp`` seconds; return the result."""
        t_start = time.perf_counter()
        _check_image(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        t = time.perf_counter()
        x, net_size = self._preprocess(image)
        timings = {"preprocess": _ms_since(t)}

        step_state, step = advance(self.segmenter, self.step_cfg, self.state.step, x,
                                   frame=image, registrator=self.registrator, stamp=stamp,
                                   frame_id=frame_id, rescale=self.cfg.resize_mode == "resize")
        timings.update(step.timings_ms)

        t = time.perf_counter()
        labels, confidence, similarity, out_logits = self._postprocess(
            step.logits, step.similarity, size, net_size)
        timings["postprocess"] = _ms_since(t)

        t = time.perf_counter()
        small = self._small_labels(labels)
        tc, flips = (self._consistency(small, step.homography, size)
                     if step.homography is not None else (math.nan, math.nan))
        timings["consistency"] = _ms_since(t)

        # Replace (never append to) the state: memory stays flat however long the stream runs.
        self.state = StreamState(step_state, small if step.finite else None)
        timings["total"] = _ms_since(t_start)
        mean_conf = float(confidence.mean()) if confidence is not None else math.nan
        return FrameResult(
            labels=labels, confidence=confidence, similarity=similarity, logits=out_logits,
            homography=step.homography, registration=step.registration,
            used_state=step.used_state, reset_reason=step.reset_reason,
            reset_detail=step.reset_detail, frame_index=step.frame_index,
            frames_since_reset=step.frames_since_reset, flip_rate=flips, tc_estimate=tc,
            mean_confidence=mean_conf if step.finite else math.nan, finite=step.finite,
            network_size=net_size, timings_ms=timings)

    def _network_size(self, size: tuple[int, int]) -> tuple[int, int]:
        if self.cfg.resize_mode == "pad":
            return (_round_up(size[0], SIZE_MULTIPLE), _round_up(size[1], SIZE_MULTIPLE))
        net = self.cfg.input_size or self.segmenter.input_size
        if net is None:
            raise ValueError("no network input size: set StreamConfig.input_size "
                             "(the backend does not fix one)")
        return net

    def _preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Return the normalised (1, 3, h, w) network input and (h, w)."""
        size = image.shape[:2]
        net = self._network_size(size)
        if self.cfg.resize_mode == "resize" and tuple(size) != net:
            shrink = net[0] * net[1] < size[0] * size[1]
            image = cv2.resize(image, (net[1], net[0]),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        x = self.segmenter.normalise(image)  # (1, 3, H or h, W or w)
        if self.cfg.resize_mode == "pad":
            # Zero after normalisation is the mean colour: the least surprising filler.
            x = F.pad(x, (0, net[1] - size[1], 0, net[0] - size[0]))
        return x, net

    def _postprocess(self, logits: torch.Tensor, sim: torch.Tensor | None,
                     size: tuple[int, int], net_size: tuple[int, int]):
        """Return labels, confidence, similarity (input resolution) and the logits (if asked)."""
        cfg = self.cfg
        with torch.inference_mode():
            z = self.segmenter.network_logits(logits.float(), net_size)
            if sim is not None:
                sim = upsample_similarity(sim.float(), net_size)
            if cfg.resize_mode == "pad":
                z = z[..., :size[0], :size[1]]  # (1, C, H, W): padding cropped
            same = tuple(z.shape[-2:]) == size
            if cfg.label_upsampling == "bilinear" and not same:
                up = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
                # max().indices, not argmax(): argmax over dim 1 is ~20x slower on CPU here.
                labels = up.max(dim=1).indices[0].to(torch.uint8).cpu().numpy()
            else:
                labels = _resize(z.max(dim=1).indices[0].to(torch.uint8).cpu().numpy(), size,
                                 cv2.INTER_NEAREST_EXACT)
            confidence = similarity = out_logits = None
            if cfg.compute_confidence:
                conf = torch.softmax(z, dim=1).amax(dim=1)[0]  # (h, w)
                confidence = _resize(conf.cpu().numpy(), size, cv2.INTER_LINEAR)
            if cfg.compute_similarity:
                if sim is None:  # no state: out = y, i.e. s = 0 everywhere
                    similarity = np.zeros(size, np.float32)
                else:
                    s = sim.float()[0, 0]
                    s = s[:size[0], :size[1]] if cfg.resize_mode == "pad" else s
                    similarity = _resize(s.cpu().numpy(), size, cv2.INTER_LINEAR)
            if cfg.return_logits:
                out_logits = z[0].cpu().numpy()
        if confidence is not None:
            np.clip(confidence, 0.0, 1.0, out=confidence)
        if similarity is not None:
            np.clip(similarity, 0.0, 1.0, out=similarity)
        return labels, confidence, similarity, out_logits

    def _small_labels(self, labels: np.ndarray) -> np.ndarray | None:
        s = self.cfg.consistency_scale
        if s == 0:
            return None
        h, w = labels.shape
        small = (max(1, round(h * s)), max(1, round(w * s)))
        if small == (h, w):
            return labels
        return _resize(labels, small, cv2.INTER_NEAREST_EXACT)

    def _consistency(self, small: np.ndarray | None, homography: np.ndarray,
                     size: tuple[int, int]) -> tuple[float, float]:
        """Return (pair mIoU, flip rate) of the labels and the previous labels warped here."""
        prev = self.state.prev_labels
        if small is None or prev is None or prev.shape != small.shape:
            return math.nan, math.nan
        h_small = rescale_homography(homography, size, small.shape)
        warped = cv2.warpPerspective(prev, h_small, (small.shape[1], small.shape[0]),
                                     flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=IGNORE_INDEX)
        # Out-of-view pixels hold the ignore index, so only co-visible pixels count.
        return (pair_miou(small, warped, self.segmenter.num_classes),
                flip_rate(small, warped))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 numpy array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"image {image.shape[:2]} is too small (min side 8)")


def _resize(a: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize a 2-D map to (H, W) with OpenCV's half-pixel-centre convention (no-op if equal)."""
    if a.shape == tuple(size):
        return a
    return cv2.resize(a, (size[1], size[0]), interpolation=interpolation)


def _pick_size(*candidates: Any) -> tuple[int, int] | None:
    for c in candidates:
        if c is not None:
            return (int(c[0]), int(c[1]))
    return None


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["FAILURE_POLICIES", "FrameResult", "LABEL_UPSAMPLING", "RESET_REASONS",
           "RESIZE_MODES", "Segmenter", "Stream", "StreamConfig", "StreamState"]
