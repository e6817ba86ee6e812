"""The paper's video baselines (SSP_SPEC §8) on our image model: DFF, NetWarp, TCB-PPM/-OCR.

``ssp_training.model_kinds`` lists the model kinds ``dff``, ``netwarp``, ``tcb_ppm`` and
``tcb_ocr`` from :data:`KINDS`, :func:`create_baseline`, :func:`forward` and :func:`predict_clip`,
so ``model.kind: dff`` in a recipe trains a baseline with ``ssp_train`` and ``ssp_eval``
evaluates its artifact; a recipe's ``model.options`` become the baseline's settings
(:func:`baseline_options`).

Example::

    >>> from ssp_perception.config import preset
    >>> model = create_baseline(preset("lite", input_size=(64, 96)), BaselineConfig("dff"))
    >>> model.kind
    'dff'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ssp_perception.config import ModelConfig
from ssp_perception.models import ImageModel
import torch
from torch import nn

from .artifact import load_baseline, load_video_model, save_baseline
from .base import VideoBaseline
from .config import BaselineConfig, FlowConfig, KINDS
from .dff import DFF
from .netwarp import NetWarp
from .tcb import TCB

Frames = Iterable[tuple[torch.Tensor, "torch.Tensor | None"]]
BASELINES: dict[str, type[VideoBaseline]] = {
    "dff": DFF, "netwarp": NetWarp, "tcb_ppm": TCB, "tcb_ocr": TCB}


def create_baseline(model_cfg: ModelConfig, cfg: BaselineConfig,
                    image_model: ImageModel | None = None,
                    load_weights: bool = True) -> VideoBaseline:
    """Build baseline ``cfg.kind`` around ``image_model`` (a new one from ``model_cfg`` if None).

    ``load_weights=False`` skips reading the RAFT weights file (an artifact brings the tensors).
    """
    return BASELINES[cfg.kind](model_cfg, cfg, image_model=image_model,
                               load_weights=load_weights)


def forward(model: nn.Module, batch: dict) -> dict:
    """Return one training step's outputs of a baseline (``forward_pair`` of the batch)."""
    return model.forward_pair(batch)


def baseline_options(kind: str, options: Mapping[str, Any]) -> BaselineConfig:
    """Return the :class:`BaselineConfig` of ``kind`` with a recipe's ``model.options``.

    ``options`` holds any ``BaselineConfig`` field but ``kind`` (e.g. ``flow: {source: raft,
    raft_weights: ..., iterations: 8}``); a RAFT flow must name its weights file.
    """
    if "kind" in options:
        raise ValueError("model.options must not set 'kind'; model.kind names the baseline")
    cfg = BaselineConfig.from_dict({"kind": kind, **dict(options)})
    if cfg.flow.source == "raft" and not cfg.flow.raft_weights:
        raise ValueError("flow.source 'raft' needs flow.raft_weights (a torchvision raft_large "
                         "state dict); nothing is downloaded")
    return cfg


@torch.no_grad()
def predict_clip(model: VideoBaseline, frames: Frames) -> Iterator[torch.Tensor]:
    """Yield (1, C, H, W) logits for each frame of one clip, in order (homographies unused)."""
    state = None
    for image, _ in frames:
        logits, state = model.infer_step(image, state)
        yield logits


__all__ = ["BASELINES", "BaselineConfig", "baseline_options", "DFF", "FlowConfig", "KINDS",
           "NetWarp", "TCB", "VideoBaseline", "create_baseline", "forward", "load_baseline",
           "load_video_model", "predict_clip", "save_baseline"]
