"""Global frame-to-frame registration: the homography that maps the previous frame to this one.

SSP aligns the previous output with one global homography per frame (SSP_SPEC §3). This module
estimates it from sparse features; ``homography_fit`` fits it robustly and rejects estimates
that cannot be camera motion:

* ``OpenCVRegistrator``: ORB (default on CPU) or SIFT, 2-NN matching with Lowe's ratio test,
  ``cv2.findHomography`` with USAC-MAGSAC (default) or RANSAC (spec §3.3), or kornia's RANSAC
  (``estimator: kornia_ransac``, the reference's estimator, spec §3.1; the paper recipes).
* ``KorniaRegistrator``: kornia DISK + LightGlue (the reference's registrator, spec §3.1), with
  weights read only from user-given files; nothing is downloaded.
* ``IdentityRegistrator``: always I (the "no registration" ablation, spec §3.2).

Every registrator caches the previous frame's keypoints and descriptors, so a stream that calls
``register_next(frame)`` once per frame computes each frame's features exactly once (the node
optimisation of spec §3.1); ``register_from(prev_features, frame)`` is the same without the
cache, for the streaming step that keeps the features in its own state. Features are detected
on a downscaled copy (``working_long_side``) and their coordinates mapped back, so homographies
and thresholds are always at the resolution of the frames passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from .config import DEVICE_PATTERN
from .files import load_tensor_file
from .geometry import resize_transform, transform_points
from .homography_fit import check_homography, ESTIMATORS, fit_homography

METHODS = ("orb", "sift", "identity", "disk_lightglue")
# More keypoints than this per frame only cost time (ORB and SIFT allocate for all of them:
# 10^9 is a bad_alloc); 640-pixel working frames rarely give more than ~20000.
MAX_FEATURES = 100_000
# Frames (after downscaling) thinner than this give no features: ORB's pyramid would shrink
# a side to zero pixels, and no homography can be trusted on a strip that narrow.
MIN_FEATURE_SIDE = 32


@dataclass(frozen=True)
class RegistrationConfig:
    """Configure frame-to-frame homography estimation and its sanity checks."""

    method: str = "orb"
    """Feature pipeline: "orb" (fast CPU default), "sift", "identity" or "disk_lightglue"."""
    working_long_side: int = 640
    """Downscale frames so their long side is at most this many pixels (0 = native size)."""
    max_features: int = 1000
    """Keypoints kept per frame (ORB/SIFT ``nfeatures``, DISK ``n``)."""
    ratio_test: float = 0.8
    """Lowe's ratio: keep a 2-NN match if best < ratio * second best (spec §3.3 uses 0.8)."""
    estimator: str = "usac_magsac"
    """Robust estimator: "usac_magsac", "ransac" (OpenCV) or "kornia_ransac" (Ref, spec §3.1)."""
    reproj_threshold_px: float = 2.5
    """Inlier threshold in pixels at the input resolution (spec §3.3 uses 2.5)."""
    max_iters: int = 2000
    """Maximum robust-estimator iterations."""
    confidence: float = 0.995
    """Robust-estimator confidence."""
    min_inliers: int = 15
    """Fewer inliers than this is a failure (4 define a homography; 15 make it trustworthy)."""
    min_inlier_ratio: float = 0.2
    """Fewer than this fraction of matches agreeing is a failure (likely unrelated frames)."""
    max_scale_change: float = 1.5
    """Largest accepted area ratio of the warped frame, either way (zoom per frame)."""
    max_anisotropy: float = 2.0
    """Largest accepted ratio of the singular values of the local linear part (shear)."""
    max_perspective: float = 0.3
    """Largest accepted relative spread of the projective depth w over the frame corners."""
    max_corner_shift: float = 0.5
    """Largest accepted corner displacement as a fraction of the frame diagonal."""
    orb_fast_threshold: int = 10
    """ORB FAST threshold; lower than OpenCV's 20 because aerial frames are often low-contrast."""
    disk_weights: str = ""
    """DISK checkpoint (kornia "depth-save.pth" or .safetensors); needed for "disk_lightglue"."""
    lightglue_weights: str = ""
    """LightGlue-for-DISK checkpoint (.pth or .safetensors); needed for "disk_lightglue"."""
    device: str = "cpu"
    """Torch device of the DISK + LightGlue networks and of kornia RANSAC's hypotheses."""

    @property
    def uses_device(self) -> bool:
        """Return True when ``device`` runs something: DISK + LightGlue or kornia's RANSAC."""
        return self.method == "disk_lightglue" or (self.estimator == "kornia_ransac"
                                                   and self.method != "identity")

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"RegistrationConfig: {msg}")

        if self.method not in METHODS:
            fail(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.estimator not in ESTIMATORS:
            fail(f"estimator {self.estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if not _is_int(self.working_long_side) or not (
                self.working_long_side == 0 or self.working_long_side >= 64):
            fail(f"working_long_side must be 0 (native) or an integer >= 64, "
                 f"got {self.working_long_side!r}")
        if not _is_int(self.max_features) or not 8 <= self.max_features <= MAX_FEATURES:
            fail(f"max_features must be an integer in 8..{MAX_FEATURES}, "
                 f"got {self.max_features!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            fail(f"device {self.device!r} is not one of cpu, cuda, cuda:N (N = GPU index)")
        if not 0.0 < self.ratio_test <= 1.0:
            fail(f"ratio_test must be in (0, 1], got {self.ratio_test!r}")
        if not self.reproj_threshold_px > 0.0:
            fail(f"reproj_threshold_px must be positive, got {self.reproj_threshold_px!r}")
        if not _is_int(self.max_iters) or self.max_iters < 1:
            fail(f"max_iters must be a positive integer, got {self.max_iters!r}")
        if not 0.0 < self.confidence < 1.0:
            fail(f"confidence must be in (0, 1), got {self.confidence!r}")
        if not _is_int(self.min_inliers) or self.min_inliers < 4:
            fail(f"min_inliers must be an integer >= 4 (a homography needs 4 points), "
                 f"got {self.min_inliers!r}")
        if not 0.0 <= self.min_inlier_ratio <= 1.0:
            fail(f"min_inlier_ratio must be in [0, 1], got {self.min_inlier_ratio!r}")
        for name in ("max_scale_change", "max_anisotropy"):
            if not getattr(self, name) >= 1.0:
                fail(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.max_perspective >= 0.0:
            fail(f"max_perspective must be >= 0, got {self.max_perspective!r}")
        if not self.max_corner_shift > 0.0:
            fail(f"max_corner_shift must be positive, got {self.max_corner_shift!r}")
        if not _is_int(self.orb_fast_threshold) or not 1 <= self.orb_fast_threshold <= 255:
            fail(f"orb_fast_threshold must be an integer in 1..255, "
                 f"got {self.orb_fast_threshold!r}")
        if self.method == "disk_lightglue":
            for name in ("disk_weights", "lightglue_weights"):
                if not getattr(self, name):
                    fail(f"method 'disk_lightglue' needs {name} (a local checkpoint path; "
                         f"weights are never downloaded)")


@dataclass
class RegistrationResult:
    """Describe one estimate: H maps previous-frame pixels to current-frame pixels."""

    homography: np.ndarray
    """(3, 3) float64, previous -> current at the input resolution; identity on failure."""
    success: bool
    """True when H passed every check and may be used to propagate state."""
    matches: int = 0
    """Matches that survived the ratio test."""
    inliers: int = 0
    """Matches consistent with H within ``reproj_threshold_px``."""
    inlier_ratio: float = 0.0
    """inliers / matches (0 when there are no matches)."""
    reason: str = ""
    """Why registration failed ("" on success)."""
    time_ms: float = 0.0
    """Wall time of this call: feature extraction of the new frame, matching, estimation."""


@dataclass
class FrameFeatures:
    """Hold one frame's keypoints and descriptors, the registrator's per-frame cache."""

    keypoints: np.ndarray
    """(N, 2) float64 keypoint centres (x, y) at the input resolution."""
    descriptors: Any
    """(N, D) descriptors: uint8 (ORB), float32 (SIFT) or a torch tensor (DISK); None if N=0."""
    size: tuple[int, int]
    """(H, W) of the input frame."""


@runtime_checkable
class Registrator(Protocol):
    """Estimate previous -> current homographies, caching the previous frame's features."""

    method: str

    def register(self, prev: np.ndarray, cur: np.ndarray) -> RegistrationResult:
        """Return the homography from ``prev`` to ``cur`` (uint8 gray or RGB); cache untouched."""

    def register_next(self, frame: np.ndarray) -> RegistrationResult:
        """Register the cached previous frame to ``frame`` and cache ``frame``'s features."""

    def register_from(self, prev: FrameFeatures | None,
                      frame: np.ndarray) -> tuple[RegistrationResult, FrameFeatures]:
        """Register ``prev`` (features of the previous frame) to ``frame``; cache untouched.

        Returns the result and ``frame``'s features, the ``prev`` of the next call: the pure
        form of ``register_next`` for callers that keep the features in their own state.
        """

    def reset(self) -> None:
        """Forget the cached previous frame."""


def identity_result(reason: str = "", time_ms: float = 0.0) -> RegistrationResult:
    """Return a failed result holding the identity homography and ``reason``."""
    return RegistrationResult(np.eye(3), success=False, reason=reason, time_ms=time_ms)


class _FeatureRegistrator:
    """Share the cache, downscaling and robust estimation of the feature-based registrators."""

    method = "features"

    def __init__(self, cfg: RegistrationConfig) -> None:
        self.cfg = cfg
        self._prev: FrameFeatures | None = None

    def reset(self) -> None:
        """Forget the cached previous frame."""
        self._prev = None

    def register(self, prev: np.ndarray, cur: np.ndarray) -> RegistrationResult:
        """Return the homography from ``prev`` to ``cur`` (uint8 gray or RGB); cache untouched."""
        start = time.perf_counter()
        _check_frame(prev)
        _check_frame(cur)
        if prev.shape[:2] != cur.shape[:2]:
            raise ValueError(f"frames differ in size: {prev.shape[:2]} vs {cur.shape[:2]}")
        a, b = self._extract(prev), self._extract(cur)
        return self._estimate(a, b, start)

    def register_next(self, frame: np.ndarray) -> RegistrationResult:
        """Register the cached previous frame to ``frame`` and cache ``frame``'s features.

        The first frame after construction or ``reset()`` gives a failed result with reason
        "no previous frame". A size change also fails (and re-primes the cache): a homography
        between frames of different sizes is not what a stream wants.
        """
        result, self._prev = self.register_from(self._prev, frame)
        return result

    def register_from(self, prev: FrameFeatures | None,
                      frame: np.ndarray) -> tuple[RegistrationResult, FrameFeatures]:
        """Register ``prev`` to ``frame``; return the result and ``frame``'s features."""
        start = time.perf_counter()
        _check_frame(frame)
        cur = self._extract(frame)
        if prev is None:
            return identity_result("no previous frame", _ms_since(start)), cur
        if prev.size != cur.size:
            return identity_result(f"frame size changed from {prev.size} to {cur.size}",
                                   _ms_since(start)), cur
        return self._estimate(prev, cur, start), cur

    def _extract(self, frame: np.ndarray) -> FrameFeatures:
        raise NotImplementedError

    def _match(self, prev: FrameFeatures, cur: FrameFeatures) -> np.ndarray:
        """Return (M, 2) int index pairs (prev index, cur index)."""
        raise NotImplementedError

    def _estimate(self, prev: FrameFeatures, cur: FrameFeatures,
                  start: float) -> RegistrationResult:
        cfg = self.cfg
        if len(prev.keypoints) < 4 or len(cur.keypoints) < 4:
            return identity_result(
                f"too few features ({len(prev.keypoints)} previous, {len(cur.keypoints)} "
                f"current; 4 needed)", _ms_since(start))
        pairs = self._match(prev, cur)
        n = len(pairs)
        if n < cfg.min_inliers:
            res = identity_result(f"{n} matches, fewer than min_inliers {cfg.min_inliers}",
                                  _ms_since(start))
            res.matches = n
            return res
        src, dst = prev.keypoints[pairs[:, 0]], cur.keypoints[pairs[:, 1]]
        h, inliers, reason = fit_homography(src, dst, cur.size, cfg)
        return RegistrationResult(np.eye(3) if h is None else h, success=h is not None,
                                  matches=n, inliers=inliers, inlier_ratio=inliers / n,
                                  reason=reason, time_ms=_ms_since(start))

    def _working_frame(self, frame: np.ndarray,
                       gray: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the (gray or RGB) working copy and the map from its pixels to input pixels.

        The map is None when the frame is already small enough to be used as it is.
        """
        if gray and frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        elif not gray and frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        hgt, wid = frame.shape[:2]
        long_side = self.cfg.working_long_side
        if long_side == 0 or max(hgt, wid) <= long_side:
            return frame, None
        s = long_side / max(hgt, wid)
        small_size = (max(1, round(hgt * s)), max(1, round(wid * s)))
        # INTER_AREA: the only OpenCV downscaler that averages, so keypoints do not alias.
        small = cv2.resize(frame, (small_size[1], small_size[0]), interpolation=cv2.INTER_AREA)
        return small, resize_transform(small_size, (hgt, wid))


class OpenCVRegistrator(_FeatureRegistrator):
    """Register with ORB or SIFT features, 2-NN ratio matching and ``cv2.findHomography``."""

    def __init__(self, cfg: RegistrationConfig) -> None:
        if cfg.method not in ("orb", "sift"):
            raise ValueError(f"OpenCVRegistrator handles 'orb' and 'sift', not {cfg.method!r}")
        super().__init__(cfg)
        self.method = cfg.method
        if cfg.method == "orb":
            self._detector = cv2.ORB_create(nfeatures=cfg.max_features,
                                            fastThreshold=cfg.orb_fast_threshold)
            self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        else:
            self._detector = cv2.SIFT_create(nfeatures=cfg.max_features)
            self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    def _extract(self, frame: np.ndarray) -> FrameFeatures:
        gray, to_input = self._working_frame(frame)
        if min(gray.shape[:2]) < MIN_FEATURE_SIDE:
            return FrameFeatures(np.zeros((0, 2)), None, tuple(frame.shape[:2]))
        kps, desc = self._detector.detectAndCompute(gray, None)
        pts = np.array([kp.pt for kp in kps], dtype=np.float64).reshape(-1, 2)
        if to_input is not None and len(pts):
            pts = transform_points(to_input, pts)
        return FrameFeatures(pts, desc if len(pts) else None, tuple(frame.shape[:2]))

    def _match(self, prev: FrameFeatures, cur: FrameFeatures) -> np.ndarray:
        knn = self._matcher.knnMatch(prev.descriptors, cur.descriptors, k=2)
        ratio = self.cfg.ratio_test
        pairs = [(m[0].queryIdx, m[0].trainIdx) for m in knn
                 if len(m) == 2 and m[0].distance < ratio * m[1].distance]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)


class KorniaRegistrator(_FeatureRegistrator):
    """Register with kornia DISK + LightGlue (spec §3.1), weights from local files only.

    Decisions: DISK gets RGB in [0, 1] (the clean choice; the reference feeds normalised
    frames, spec §3.1 quirk), LightGlue keeps kornia's defaults, and the homography is fitted
    by the same ``fit_homography`` + checks as the OpenCV path (``estimator`` chooses OpenCV's
    or kornia's RANSAC), so all methods are judged by one rule and the threshold stays in
    input pixels.
    """

    method = "disk_lightglue"

    def __init__(self, cfg: RegistrationConfig) -> None:
        if cfg.method != "disk_lightglue":
            raise ValueError(f"KorniaRegistrator handles 'disk_lightglue', not {cfg.method!r}")
        import kornia.feature as kf
        import torch

        super().__init__(cfg)
        self._torch = torch
        self._device = torch.device(cfg.device)
        disk_state = load_tensor_file(cfg.disk_weights, "registration.disk_weights (DISK)")
        # kornia's released DISK file nests the network under "extractor".
        disk_state = disk_state.get("extractor", disk_state)
        self._disk = kf.DISK()
        self._disk.load_state_dict(disk_state)
        self._disk.eval().to(self._device)
        # features=None builds LightGlue without touching the network; the DISK configuration
        # (128-d input) is then given explicitly.
        self._lightglue = kf.LightGlue(None, **{**kf.LightGlue.features["disk"], "weights": None})
        state = load_tensor_file(cfg.lightglue_weights, "registration.lightglue_weights "
                                 "(LightGlue)")
        state = _rename_lightglue_keys(state, self._lightglue.conf.n_layers)
        # Released files lack derived buffers (confidence thresholds); every learned
        # parameter must be there, and nothing foreign may be.
        bad = self._lightglue.load_state_dict(state, strict=False)
        params = dict(self._lightglue.named_parameters())
        missing = [k for k in bad.missing_keys if k in params]
        if missing or bad.unexpected_keys:
            raise ValueError(f"{cfg.lightglue_weights}: not a LightGlue-for-DISK checkpoint "
                             f"(missing {missing[:5]}, unexpected {bad.unexpected_keys[:5]})")
        self._lightglue.eval().to(self._device)

    def _extract(self, frame: np.ndarray) -> FrameFeatures:
        torch = self._torch
        small, to_input = self._working_frame(frame, gray=False)
        if min(small.shape[:2]) < MIN_FEATURE_SIDE:
            return FrameFeatures(np.zeros((0, 2)), None, tuple(frame.shape[:2]))
        # (1, 3, h, w) float in [0, 1]
        x = torch.from_numpy(small).to(self._device).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            feats = self._disk(x, n=self.cfg.max_features, pad_if_not_divisible=True)[0]
        pts = feats.keypoints.double().cpu().numpy().reshape(-1, 2)
        if to_input is not None and len(pts):
            pts = transform_points(to_input, pts)
        # LightGlue wants the keypoints in the frame the descriptors came from: keep both.
        desc = {"desc": feats.descriptors, "kpts": feats.keypoints,
                "size": (small.shape[1], small.shape[0])} if len(pts) else None
        return FrameFeatures(pts, desc, tuple(frame.shape[:2]))

    def _match(self, prev: FrameFeatures, cur: FrameFeatures) -> np.ndarray:
        torch = self._torch

        def image(f: FrameFeatures) -> dict:
            w, h = f.descriptors["size"]
            return {"keypoints": f.descriptors["kpts"][None],       # (1, N, 2) x, y
                    "descriptors": f.descriptors["desc"][None],     # (1, N, 128)
                    "image_size": torch.tensor([[w, h]], device=self._device)}

        with torch.inference_mode():
            out = self._lightglue({"image0": image(prev), "image1": image(cur)})
        m0 = out["matches0"][0]  # (N0,) index into image1 or -1
        valid = m0 > -1
        idx0 = torch.nonzero(valid).squeeze(1)
        return torch.stack([idx0, m0[valid]], dim=1).cpu().numpy().astype(np.int64)


class IdentityRegistrator:
    """Return the identity for every pair (the "no registration" ablation, spec §3.2)."""

    method = "identity"

    def __init__(self, cfg: RegistrationConfig | None = None) -> None:
        self.cfg = cfg or RegistrationConfig(method="identity")
        self._prev: FrameFeatures | None = None

    def register(self, prev: np.ndarray, cur: np.ndarray) -> RegistrationResult:
        """Return the identity homography as a successful estimate."""
        _check_frame(prev)
        _check_frame(cur)
        return RegistrationResult(np.eye(3), success=True)

    def register_next(self, frame: np.ndarray) -> RegistrationResult:
        """Return the identity, failing only for the first frame or after a size change."""
        result, self._prev = self.register_from(self._prev, frame)
        return result

    def register_from(self, prev: FrameFeatures | None,
                      frame: np.ndarray) -> tuple[RegistrationResult, FrameFeatures]:
        """Return the identity from ``prev``'s frame to ``frame`` and ``frame``'s size."""
        _check_frame(frame)
        cur = FrameFeatures(np.zeros((0, 2)), None, tuple(frame.shape[:2]))
        if prev is None:
            return identity_result("no previous frame"), cur
        if prev.size != cur.size:
            return identity_result(f"frame size changed from {prev.size} to {cur.size}"), cur
        return RegistrationResult(np.eye(3), success=True), cur

    def reset(self) -> None:
        """Forget the previous frame's size."""
        self._prev = None


def create_registrator(cfg: RegistrationConfig | None = None) -> Registrator:
    """Build the registrator ``cfg.method`` names (default: ORB)."""
    cfg = cfg or RegistrationConfig()
    if cfg.method == "identity":
        return IdentityRegistrator(cfg)
    if cfg.method == "disk_lightglue":
        return KorniaRegistrator(cfg)
    return OpenCVRegistrator(cfg)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 numpy arrays, got "
                         f"{getattr(frame, 'dtype', type(frame).__name__)}")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3))):
        raise ValueError(f"frames must be HxW gray or HxWx3 RGB, got shape {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        raise ValueError("pass single-channel frames as HxW, not HxWx1")
    if min(frame.shape[:2]) < 8:
        raise ValueError(f"frame {frame.shape[:2]} is too small to register (min side 8)")


def _rename_lightglue_keys(state: dict, n_layers: int) -> dict:
    """Map the released LightGlue key names onto kornia's module layout."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("matcher.")
        for i in range(n_layers):
            key = key.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
            key = key.replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn.")
        out[key] = value
    return out


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["FrameFeatures", "IdentityRegistrator", "KorniaRegistrator", "METHODS",
           "OpenCVRegistrator", "RegistrationConfig", "RegistrationResult", "Registrator",
           "check_homography", "create_registrator", "identity_result"]
