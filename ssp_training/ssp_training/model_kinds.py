"""Model kinds the trainer can build: a plain dict from ``model.kind`` to a :class:`ModelKind`.

``image`` and ``ssp`` are defined here; the video baselines (DFF, NetWarp, TCB) are listed
from ``ssp_training.baselines``, so ``model.kind: dff`` in a recipe works without any import in
user code. :func:`get_model_kind` is a plain dict lookup.

The contract a kind fulfils (what the trainer and the validator call):

- ``build(cfg) -> nn.Module``: the whole model, the thing saved as the artifact. It must have an
  ``image_model`` attribute (an ``ssp_perception.models.ImageModel``) so that recipes can start
  it from a trained image-model artifact (``model.init``).
- ``trainable(model) -> nn.Module``: the part whose parameters are optimised and that DDP wraps
  (the image kind trains ``model.image_model`` only, so the unused similarity block never
  reaches the optimiser or DDP).
- ``forward(trainable, batch) -> dict``: one training step's outputs. ``batch`` is the collated
  sample dict (``image``, ``prev_image``, ``homography``, ``flow``, ... as the dataset gives
  them). It returns at least ``"out"`` (B, C, H, W) full-resolution logits of the current frame;
  video kinds trained with the TC loss or KD-SSP also return ``"prev_logits"`` (B, C, H, W), the
  raw image-model logits of the previous frame (for unrolled SSP samples, ``data.unroll`` > 1,
  its fused output).
- ``predict_clip(model, frames) -> iterator``: inference over one clip in order, batch 1.
  ``frames`` yields ``(image (1, 3, H, W) normalised, homography (1, 3, 3) previous -> current
  or None for the first frame and where registration failed)``; it yields the (1, C, H, W)
  logits of every frame. Kinds that fuse through a homography (``needs_homography``) also
  take ``on_registration_failure`` ("reset" | "identity", ``val.on_registration_failure``).
- ``save(path, model, class_set, provenance, half)``: writes the artifact (default
  ``ssp_perception.artifact.save_artifact``; baselines mark theirs with ``save_baseline``).
  The trainer puts ``model_kind`` into the provenance, so ``model.init`` knows what it holds.
- ``build_with_options(cfg, options)`` and ``check_options(options)``: for kinds with settings
  of their own (e.g. a baseline's flow network), the recipe's ``model.options`` mapping is
  validated by ``check_options`` when the recipe loads and handed to ``build_with_options``.
  Kinds without them reject a non-empty ``model.options``.
- ``video``: whether samples are frame pairs; ``offsets``: previous-frame offsets the dataset
  loads (SSP: ``(-1,)``, TCB: ``(-1, -2, -3)``); ``needs_homography``: whether batches must
  carry ``homography``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ssp_perception.artifact import save_artifact
from ssp_perception.backends.torch_backend import TorchBackend
from ssp_perception.config import ModelConfig
from ssp_perception.models import create_model, SSPModel
from ssp_perception.streaming import advance, NonFiniteOutputError, StepConfig, StepState
import torch
from torch import nn

from . import baselines
from .data.dataset import unrolled_frames

Frames = Iterable[tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class ModelKind:
    """How to build, train and run one kind of model (see the module docstring)."""

    name: str
    """Kind name used in recipes (``model.kind``)."""
    build: Callable[[ModelConfig], nn.Module]
    """Build the whole model (random init) from a ModelConfig."""
    forward: Callable[[nn.Module, dict], dict]
    """Training forward: (trainable module, batch) -> {"out", ["prev_logits"], ...}."""
    predict_clip: Callable[..., Iterator[torch.Tensor]]
    """Sequential inference over one clip (batch 1), yielding (1, C, H, W) logits per frame."""
    video: bool = False
    """Whether training samples are frame pairs (or tuples)."""
    offsets: tuple[int, ...] = (-1,)
    """Previous-frame offsets a video sample loads."""
    needs_homography: bool = False
    """Whether training batches must carry a (B, 3, 3) ``homography``."""
    trainable: Callable[[nn.Module], nn.Module] = lambda model: model
    """The optimised (and DDP-wrapped) part of the model."""
    save: Callable[..., object] = save_artifact
    """Artifact writer with ``save_artifact``'s signature."""
    build_with_options: Callable[[ModelConfig, Mapping[str, Any]], nn.Module] | None = None
    """Build from a ModelConfig and the recipe's ``model.options`` (kinds that take options)."""
    check_options: Callable[[Mapping[str, Any]], object] | None = None
    """Validate ``model.options`` without building; raise ValueError saying what is wrong."""

    def create(self, cfg: ModelConfig, options: Mapping[str, Any] | None = None) -> nn.Module:
        """Build the model, passing ``options`` to kinds that take them."""
        if not options:
            return self.build(cfg)
        if self.build_with_options is None:
            raise ValueError(f"model kind {self.name!r} takes no model.options "
                             f"(got {sorted(options)})")
        return self.build_with_options(cfg, options)


def _image_forward(image_model: nn.Module, batch: dict) -> dict:
    return {"out": image_model(batch["image"])}


@torch.no_grad()
def _image_predict(model: SSPModel, frames: Frames) -> Iterator[torch.Tensor]:
    for image, _ in frames:
        yield model.output_logits(model.image_step(image)[0], image.shape[-2:])


def _ssp_forward(model: SSPModel, batch: dict) -> dict:
    if "chain_homographies" in batch:   # an unrolled sample (data.unroll > 1)
        return model.forward_unrolled(unrolled_frames(batch), batch["chain_homographies"])
    return model.forward_pair(batch["prev_image"], batch["image"], batch["homography"])


@torch.no_grad()
def _ssp_predict(model: SSPModel, frames: Frames, on_registration_failure: str = "reset"
                 ) -> Iterator[torch.Tensor]:
    """Run SSP recurrently through the node's streaming step (SSP_SPEC §2.7).

    The state is the *fused* previous output. A frame whose homography is None after the
    first is a failed registration, handled by the step's ``on_registration_failure`` policy
    ("reset" drops the state as the node does, "identity" fuses unaligned as Ref and
    ``ssp_eval``'s default). Non-finite logits raise ``NonFiniteOutputError``.
    """
    net = TorchBackend(model, device=next(model.parameters()).device)
    # Clips carry no stamps or camera ids: only registration failure resets within a clip.
    cfg = StepConfig(max_gap_s=0.0, reset_on_frame_id_change=False,
                     on_registration_failure=on_registration_failure)
    state = StepState()
    for image, homography in frames:
        h = None if homography is None else homography[0].double().cpu().numpy()
        state, res = advance(net, cfg, state, image, homography=h)
        if not res.finite:
            raise NonFiniteOutputError("the SSP step returned non-finite logits (NaN or inf)")
        yield model.output_logits(res.logits, image.shape[-2:])


MODEL_KINDS: dict[str, ModelKind] = {
    "image": ModelKind(name="image", build=create_model, forward=_image_forward,
                       predict_clip=_image_predict, video=False,
                       trainable=lambda model: model.image_model),
    "ssp": ModelKind(name="ssp", build=create_model, forward=_ssp_forward,
                     predict_clip=_ssp_predict, video=True, needs_homography=True),
}


def _baseline_kind(kind: str) -> ModelKind:
    # Without model.options the baseline takes its defaults, with the TCB widths scaled to the
    # image model's head (BaselineConfig docs); the options are BaselineConfig fields.
    return ModelKind(
        name=kind,
        build=lambda cfg: baselines.create_baseline(cfg, baselines.BaselineConfig(kind=kind)),
        build_with_options=lambda cfg, options: baselines.create_baseline(
            cfg, baselines.baseline_options(kind, options)),
        check_options=lambda options: baselines.baseline_options(kind, options),
        forward=baselines.forward, predict_clip=baselines.predict_clip, video=True,
        offsets=(-1, -2, -3) if kind.startswith("tcb") else (-1,), needs_homography=False,
        save=baselines.save_baseline)


MODEL_KINDS.update({kind: _baseline_kind(kind) for kind in baselines.KINDS})


def get_model_kind(name: str) -> ModelKind:
    """Return the model kind ``name`` (a ValueError lists the known ones)."""
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {name!r}; known: {', '.join(sorted(MODEL_KINDS))}")
    return MODEL_KINDS[name]
