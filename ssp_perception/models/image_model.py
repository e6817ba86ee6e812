"""Per-frame segmenter: timm backbone + UperNet head (SSP_SPEC §1.1, ``hierasam_upernet``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .backbones import Backbone
from .upernet import UperNetHead
from ..config import ModelConfig


def upsample_logits(logits: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resize (B, C, h, w) logits to ``size`` (H, W) with ``mode``, align_corners=False."""
    return F.interpolate(logits, size=(int(size[0]), int(size[1])), mode=mode,
                         align_corners=False)


def interpolation_matrix(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """Return the (n_in, n_out) matrix of 1-D ``F.interpolate`` (align_corners=False) resizing.

    Obtained by resizing the identity basis with PyTorch itself, so it is the exact operator
    PyTorch applies (kernel, border clamping), not a re-derivation of it.
    """
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    return F.interpolate(eye, size=(1, n_out), mode=mode, align_corners=False).view(n_in, n_out)


class SeparableResize(nn.Module):
    """Resize (B, C, h, w) to (B, C, H, W) as ``rows @ x @ cols``, exactly like F.interpolate.

    Why: bicubic and bilinear interpolation are separable linear maps, and both onnxruntime's
    CPU ``Resize`` (cubic) and PyTorch's CPU bicubic kernel are slow: at 96x160 -> 384x640 with
    8 classes on one thread, 14.7 ms for ``F.interpolate`` against 4.5 ms for the two small
    MatMuls, which agree with it to ~1e-6. Needs fixed sizes (exports with dynamic H/W keep the
    model's own ``F.interpolate``).
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], mode: str) -> None:
        super().__init__()
        rows = interpolation_matrix(in_size[0], out_size[0], mode).t()  # (H, h)
        cols = interpolation_matrix(in_size[1], out_size[1], mode)  # (w, W)
        self.register_buffer("rows", rows.float().contiguous(), persistent=False)
        self.register_buffer("cols", cols.float().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the resized map: (H, h) @ (B, C, h, w) @ (w, W) -> (B, C, H, W)."""
        return self.rows @ (x @ self.cols)


class ImageModel(nn.Module):
    """Backbone (``encoder``) -> UperNet (``decoder``) -> logits upsampled to the input size."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder = Backbone(cfg.backbone, cfg.feature_indices)
        self.decoder = UperNetHead(self.encoder.channels, cfg.head_channels, cfg.num_classes,
                                   cfg.pool_scales)
        self.upsample_mode = cfg.upsample_mode

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Return the channel counts of the 4 backbone maps (stride 4 first)."""
        return self.encoder.channels

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Return the strides of the 4 backbone maps: (4, 8, 16, 32)."""
        return self.encoder.strides

    @property
    def num_classes(self) -> int:
        """Return the number of output classes C."""
        return self.decoder.classifier.out_channels

    def decoder_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return the K-channel decoder feature (B, K, H/4, W/4)."""
        return self.decoder.features(feats)

    def classifier(self, feat: torch.Tensor) -> torch.Tensor:
        """Map a decoder feature (B, K, h, w) to logits (B, C, h, w)."""
        return self.decoder.classifier(feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a normalised image (B, 3, H, W) to logits (B, C, H, W)."""
        return upsample_logits(self.decoder(self.encoder(x)), x.shape[-2:], self.upsample_mode)
