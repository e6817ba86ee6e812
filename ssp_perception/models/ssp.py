"""SSP video model: image model + homography warp + similarity-weighted fusion (SSP_SPEC §2).

``out = s * warp(prev_out, H) + (1 - s) * y`` in logit space, with ``s`` predicted at stride 4
from the stage-1 features (their embeddings, see ``similarity.py``; the previous one warped with
the scale-conjugated homography). Where the fusion happens is ``cfg.upsample_before_mixing``:

* True (the spec's default and every spec config): the logits are upsampled to the input size
  first, the previous fused logits are warped at full resolution, ``s`` is upsampled bilinearly
  and the fused full-resolution logits are the state;
* False (spec §2.3's alternative; the ``lite`` preset): logits, warp and blend stay at stride 4
  (warped with the same conjugated homography as the features), the stride-4 fused logits are the
  state, and only the output is upsampled, by :meth:`SSPModel.output_logits`.

The steps (:meth:`SSPModel.image_step`, :meth:`SSPModel.step`) therefore return logits at the
*fusion resolution*; ``output_logits`` brings them to the input size (a no-op for the spec's
default). The mixing op is the identity (every spec config), so it has no module here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .image_model import ImageModel, upsample_logits
from .similarity import SimilarityBlock
from ..config import ModelConfig
from ..geometry import scale_homography, warp_homography


def upsample_similarity(s: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Return s (B, 1, h, w) at ``size`` (H, W): bilinear, align_corners=False (spec §2.3).

    Unchanged when it already has that size (fusion at the input resolution).
    """
    if tuple(s.shape[-2:]) == (int(size[0]), int(size[1])):
        return s
    return F.interpolate(s, size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)


class SSPModel(nn.Module):
    """Semantic Similarity Propagation around an :class:`ImageModel`."""

    def __init__(self, cfg: ModelConfig, image_model: ImageModel,
                 similarity: SimilarityBlock) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_model = image_model
        self.similarity = similarity
        self.feature_stride = image_model.feature_strides[0]

    @property
    def num_classes(self) -> int:
        """Return the number of output classes C."""
        return self.image_model.num_classes

    @property
    def feature_channels(self) -> int:
        """Return k, the channel count of the stage-1 embedding carried in the state.

        k = d for the spec's blocks, which keep the raw stage-1 feature.
        """
        return self.similarity.embed_channels

    @property
    def fusion_stride(self) -> int:
        """Return 1 if fusion runs at the input resolution, else the stage-1 stride (4)."""
        return 1 if self.cfg.upsample_before_mixing else self.feature_stride

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the image model alone: (logits (B, C, H/r, W/r), embedding (B, k, H/4, W/4)).

        The logits are at the fusion resolution, r = :attr:`fusion_stride`.
        """
        feats = self.image_model.encoder(image)
        logits = self.image_model.decoder(feats)  # (B, C, H/4, W/4)
        if self.cfg.upsample_before_mixing:
            logits = upsample_logits(logits, image.shape[-2:], self.cfg.upsample_mode)
        return logits, self.similarity.embed(feats[0])

    def output_logits(self, logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Return step logits at the input ``size`` (H, W).

        Stride-4 logits get the image model's own upsampling; logits that already have that
        size come back unchanged.
        """
        if tuple(logits.shape[-2:]) == (int(size[0]), int(size[1])):
            return logits
        return upsample_logits(logits, size, self.cfg.upsample_mode)

    def fuse(self, logits: torch.Tensor, feat: torch.Tensor, prev_logits: torch.Tensor,
             prev_feat: torch.Tensor, homography: torch.Tensor,
             use_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse the current output with the warped previous one; return (out, s).

        logits, prev_logits: (B, C, h, w) at the fusion resolution (input size H x W, or H/4 x
        W/4); feat, prev_feat: stage-1 embeddings (B, k, H/4, W/4); homography: (B, 3, 3),
        previous -> current pixel coordinates at H x W; use_prev: optional (B,) 0/1 factor on s.
        ``out`` and ``s`` (B, 1, h, w) come back at the fusion resolution.
        """
        size, feat_size = logits.shape[-2:], feat.shape[-2:]
        h_feat = scale_homography(homography, 1.0 / self.feature_stride)
        if size == feat_size:
            # Fusion at stride 4: logits and embedding share the conjugated homography, so one
            # warp (one sampling grid) serves both.
            both = warp_homography(torch.cat([prev_logits, prev_feat], dim=1), h_feat, size)
            prev_warped, feat_warped = both[:, :logits.shape[1]], both[:, logits.shape[1]:]
        else:
            prev_warped = warp_homography(prev_logits, homography, size)  # ŷ_{t-1}
            feat_warped = warp_homography(prev_feat, h_feat, feat_size)  # ê_{t-1}
        s = self.similarity(feat_warped, feat)  # (B, 1, H/4, W/4)
        if use_prev is not None:
            # Applied before upsampling (bilinear is linear): 16x fewer pixels, same result.
            s = s * use_prev.to(s.dtype).reshape(-1, 1, 1, 1)
        s = upsample_similarity(s, size)  # (B, 1, h, w)
        # out = s * ŷ_{t-1} + (1 - s) * y_t, as one fused lerp: y + s * (ŷ - y).
        return torch.lerp(logits, prev_warped, s), s

    def forward_pair(self, prev_image: torch.Tensor, image: torch.Tensor,
                     homography: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the two-frame training step (spec §2.3).

        prev_image, image: normalised (B, 3, H, W); homography: (B, 3, 3) previous -> current.
        Returns ``out`` (fused logits), ``prev_logits`` (raw previous image-model logits),
        ``logits`` (raw current logits), all (B, C, H, W) at the input size whatever the fusion
        resolution, and ``sim`` (B, 1, H, W).
        """
        # Two separate passes (not one batch of 2B), as in the spec: BatchNorm statistics in
        # training mode then stay per frame.
        prev_logits, prev_feat = self.image_step(prev_image)
        logits, feat = self.image_step(image)
        out, s = self.fuse(logits, feat, prev_logits, prev_feat, homography)
        size = image.shape[-2:]
        s = upsample_similarity(s, size)
        return {"out": self.output_logits(out, size),
                "prev_logits": self.output_logits(prev_logits, size),
                "logits": self.output_logits(logits, size), "sim": s}

    def forward_unrolled(self, images: torch.Tensor, homographies: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """Run the recurrence of spec §2.7 over a short clip; return its last step's outputs.

        images: normalised (B, T, 3, H, W), oldest first, T >= 2; homographies: (B, T - 1, 3, 3),
        element t maps frame t to frame t + 1. The state entering the last step is the fused
        output of frame T - 2, as at inference, not the raw image-model output that
        :meth:`forward_pair` gives the current frame (T = 2 is exactly :meth:`forward_pair`).
        Frames before the last pair only build the state and run without gradient (truncated
        back-propagation through time); the last pair runs with it as in :meth:`forward_pair`.
        Returns ``out``, ``prev_logits`` (the fused output of frame T - 2), ``logits`` (raw
        current) and ``sim``, as :meth:`forward_pair`.
        """
        t = images.shape[1]
        if t < 2 or homographies.shape[1] != t - 1:
            raise ValueError(f"forward_unrolled needs T >= 2 frames and T - 1 homographies, got "
                             f"{tuple(images.shape)} and {tuple(homographies.shape)}")
        if t == 2:
            return self.forward_pair(images[:, 0], images[:, 1], homographies[:, 0])
        with torch.no_grad():
            state, state_feat = self.image_step(images[:, 0])
            for k in range(1, t - 2):
                logits, feat = self.image_step(images[:, k])
                state, _ = self.fuse(logits, feat, state, state_feat, homographies[:, k - 1])
                state_feat = feat
        prev_raw, prev_feat = self.image_step(images[:, t - 2])
        prev_out, _ = self.fuse(prev_raw, prev_feat, state, state_feat, homographies[:, t - 3])
        logits, feat = self.image_step(images[:, t - 1])
        out, s = self.fuse(logits, feat, prev_out, prev_feat, homographies[:, t - 2])
        size = images.shape[-2:]
        return {"out": self.output_logits(out, size),
                "prev_logits": self.output_logits(prev_out, size),
                "logits": self.output_logits(logits, size),
                "sim": upsample_similarity(s, size)}

    def step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
             homography: torch.Tensor, use_prev: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run one recurrent inference step of spec §2.7 as a pure function of its inputs.

        image: normalised (B, 3, H, W); prev_logits: fused logits of the previous step at the
        fusion resolution (B, C, H/r, W/r); prev_feat: previous stage-1 embedding
        (B, k, H/4, W/4); homography (B, 3, 3) previous -> current at H x W; use_prev: (B,) 0/1,
        multiplied into s so that the first frame (use_prev = 0, any finite state, e.g. zeros)
        yields the plain image output. Returns (fused logits (B, C, H/r, W/r), this frame's
        stage-1 embedding, s (B, 1, H/r, W/r)); :meth:`output_logits` gives the input size.
        """
        logits, feat = self.image_step(image)
        out, s = self.fuse(logits, feat, prev_logits, prev_feat, homography, use_prev)
        return out, feat, s

    def forward(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                homography: torch.Tensor, use_prev: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Alias of :meth:`step`, so ``torch.onnx.export(model, ...)`` exports the step."""
        return self.step(image, prev_logits, prev_feat, homography, use_prev)
