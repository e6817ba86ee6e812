"""One streaming interface over everything ``ssp_eval`` compares: image model, SSP, baselines.

A predictor holds one clip's temporal state explicitly (``reset()`` drops it) and turns frames
into logits, in order, batch 1 (SSP_SPEC §7.1). The models stay pure functions of their inputs;
this module only carries their state from frame to frame.

SSP runs the one streaming step the node runs (``ssp_perception.streaming.advance``): the same
state, reset policy and registration-failure policy. Evaluation decisions:

- The homography comes from a registrator (``homography="registrator"``, ORB by default: what
  the node runs), from the dataset (``"dataset"``: ground truth on synthetic data) or is the
  identity (the "no registration" ablation, SSP_SPEC §9); the last two are handed to the step.
- A failed registration resets the state by default (the node's behaviour);
  ``on_registration_failure="identity"`` fuses unaligned like Ref.
- Non-finite logits raise :class:`NonFiniteOutputError`: a score of a broken model is no score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ssp_perception.backends.torch_backend import TorchBackend
from ssp_perception.models import ImageModel, SSPModel, upsample_similarity
from ssp_perception.registration import create_registrator, RegistrationConfig
from ssp_perception.streaming import (advance, FAILURE_POLICIES, NonFiniteOutputError,
                                      StepConfig, StepState)
import torch
from torch import nn

from ..baselines import VideoBaseline

HOMOGRAPHY_SOURCES = ("registrator", "dataset", "identity")


@dataclass
class Frame:
    """One frame of a clip as the predictors see it."""

    image: torch.Tensor
    """(1, 3, H, W) ImageNet-normalised network input on the evaluation device."""
    rgb: np.ndarray
    """(H, W, 3) uint8 RGB at the same size (registration and optical flow run on it)."""
    homography: np.ndarray | None
    """(3, 3) ground-truth homography previous -> this frame at H x W, or None."""


@dataclass
class Prediction:
    """What a predictor returns for one frame."""

    logits: torch.Tensor
    """(1, C, H, W) logits at the input size."""
    similarity: torch.Tensor | None = None
    """(1, 1, H, W) SSP weight s of the propagated output (None without propagation)."""


class Predictor(Protocol):
    """Stream frames of one clip through a model; ``reset()`` before every clip."""

    kind: str
    """Model kind: "image", "ssp", "dff", "netwarp", "tcb_ppm" or "tcb_ocr"."""
    module: nn.Module
    """Everything the method runs with weights (parameters are counted on it)."""

    def reset(self) -> None:
        """Drop the temporal state (start of a clip)."""

    def step(self, frame: Frame) -> Prediction:
        """Return the prediction for the next frame of the clip."""


class ImagePredictor:
    """The image model alone: every frame independent (``--no-propagation``)."""

    kind = "image"

    def __init__(self, image_model: ImageModel) -> None:
        self.model = image_model
        self.module = image_model

    def reset(self) -> None:
        """Do nothing: the image model has no state."""

    @torch.no_grad()
    def step(self, frame: Frame) -> Prediction:
        """Return the image model's logits for ``frame``."""
        return Prediction(self.model(frame.image))


class SSPPredictor:
    """SSP recurrent inference (SSP_SPEC §2.7) through the shared streaming step."""

    kind = "ssp"

    def __init__(self, model: SSPModel, homography: str = "registrator",
                 registration: RegistrationConfig | None = None,
                 on_registration_failure: str = "reset") -> None:
        if homography not in HOMOGRAPHY_SOURCES:
            raise ValueError(f"homography source {homography!r} is not one of "
                             f"{', '.join(HOMOGRAPHY_SOURCES)}")
        if on_registration_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_registration_failure {on_registration_failure!r} is not one "
                             f"of {', '.join(FAILURE_POLICIES)}")
        self.model = model
        self.module = model
        self.source = homography
        # Frames carry no stamps or camera ids: only registration failure resets within a clip.
        self.cfg = StepConfig(max_gap_s=0.0, reset_on_frame_id_change=False,
                              on_registration_failure=on_registration_failure)
        self.net = TorchBackend(model, device=next(model.parameters()).device)
        self.registrator = (create_registrator(registration or RegistrationConfig())
                            if homography == "registrator" else None)
        self.state = StepState()
        self.failures = 0

    def reset(self) -> None:
        """Drop the previous output, embedding and registration features (a new clip)."""
        self.state = StepState()

    def _homography(self, frame: Frame) -> np.ndarray | None:
        """Return the supplied previous -> current homography (None with a registrator)."""
        if self.source == "registrator":
            return None
        if self.source == "identity":
            return np.eye(3)
        if self.source == "dataset" and self.state.prev_logits is not None \
                and frame.homography is None:
            raise ValueError("homography source 'dataset' but the dataset has no "
                             "registration/<stem>.npy for this frame; use 'registrator'")
        return frame.homography

    @torch.no_grad()
    def step(self, frame: Frame) -> Prediction:
        """Return the fused logits and s for ``frame``; the first frame is the image output."""
        self.state, res = advance(self.net, self.cfg, self.state, frame.image, frame=frame.rgb,
                                  registrator=self.registrator,
                                  homography=self._homography(frame))
        if not res.finite:
            raise NonFiniteOutputError("the SSP step returned non-finite logits (NaN or inf)")
        self.failures += res.registration is not None and not res.registration.success
        size = frame.image.shape[-2:]
        sim = None if res.similarity is None else upsample_similarity(res.similarity, size)
        return Prediction(self.model.output_logits(res.logits, size), sim)


class BaselinePredictor:
    """A video baseline's own recurrent inference (``infer_step``)."""

    def __init__(self, model: VideoBaseline) -> None:
        self.model = model
        self.module = model
        self.kind = model.kind
        self.state = None

    def reset(self) -> None:
        """Drop the baseline's state."""
        self.state = None

    @torch.no_grad()
    def step(self, frame: Frame) -> Prediction:
        """Return the baseline's logits for ``frame``."""
        logits, self.state = self.model.infer_step(frame.image, self.state)
        return Prediction(logits)
