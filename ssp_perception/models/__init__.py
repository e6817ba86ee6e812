"""Models: image model (timm backbone + UperNet), similarity blocks and the SSP wrapper."""

from __future__ import annotations

from .backbones import Backbone
from .image_model import ImageModel, interpolation_matrix, SeparableResize, upsample_logits
from .pretrained import load_backbone_weights, WeightsError, WeightSource
from .similarity import create_similarity
from .ssp import SSPModel, upsample_similarity
from .upernet import UperNetHead
from ..config import ModelConfig


def create_image_model(cfg: ModelConfig) -> ImageModel:
    """Build the per-frame image model of ``cfg`` (random init; no downloads)."""
    return ImageModel(cfg)


def create_model(cfg: ModelConfig, backbone_weights: WeightSource | str | None = None
                 ) -> SSPModel:
    """Build the SSP model of ``cfg``; optionally load pretrained weights into the backbone.

    ``backbone_weights`` is a :class:`WeightSource` or its string form (``sam2:<path>``,
    ``timm:<path>``, ``package:efficientnet_lite0``; see ``models/pretrained.py``).
    """
    image_model = create_image_model(cfg)
    if backbone_weights is not None:
        load_backbone_weights(image_model, backbone_weights)
    similarity = create_similarity(cfg.sim_op, image_model.feature_channels[0], cfg.sim_channels)
    return SSPModel(cfg, image_model, similarity)


__all__ = ["Backbone", "ImageModel", "SSPModel", "SeparableResize", "UperNetHead",
           "WeightSource", "WeightsError", "create_image_model", "create_model",
           "create_similarity", "interpolation_matrix", "load_backbone_weights",
           "upsample_logits", "upsample_similarity"]
