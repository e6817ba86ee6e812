"""Models: image model (timm backbone + UperNet), similarity blocks and the SSP wrapper."""

from __future__ import annotations

from .backbones import Backbone
from .image_model import ImageModel, interpolation_matrix, SeparableResize, upsample_logits
from .similarity import create_similarity
from .ssp import SSPModel, upsample_similarity
from .upernet import UperNetHead
from ..config import ModelConfig


def create_image_model(cfg: ModelConfig) -> ImageModel:
    """Build the per-frame image model of ``cfg`` (random init; no downloads)."""
    return ImageModel(cfg)


def create_model(cfg: ModelConfig, sam2_checkpoint: str | None = None) -> SSPModel:
    """Build the SSP model of ``cfg``; optionally load SAM2 Hiera weights into the backbone."""
    image_model = create_image_model(cfg)
    if sam2_checkpoint is not None:
        # Imported here: artifact.py builds models, so a module-level import would be circular.
        from ..artifact import load_sam2_checkpoint
        load_sam2_checkpoint(image_model, sam2_checkpoint)
    similarity = create_similarity(cfg.sim_op, image_model.feature_channels[0], cfg.sim_channels)
    return SSPModel(cfg, image_model, similarity)


__all__ = ["Backbone", "ImageModel", "SSPModel", "SeparableResize", "UperNetHead",
           "create_image_model", "create_model", "create_similarity", "interpolation_matrix",
           "upsample_logits", "upsample_similarity"]
