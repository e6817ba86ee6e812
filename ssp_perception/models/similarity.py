"""Similarity blocks: per-pixel propagation weight s in [0, 1] (SSP_SPEC §2.5).

A block first ``embed``s each frame's stage-1 feature (B, d, h, w) at stride 4; that embedding
is what the stream keeps as state and what gets warped. For the spec's blocks the embedding is
the feature itself. The block then maps (warped previous embedding ê_{t-1}, current embedding
e_t) to s of shape (B, 1, h, w). Fusion and upsampling live in ``ssp.py``.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class SimilarityBlock(nn.Module):
    """Base: the embedding is the stage-1 feature itself (every block of the spec)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.embed_channels = channels
        """Channels of :meth:`embed`'s output: what the state keeps per pixel at stride 4."""

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """Return the per-frame embedding kept in the state (B, embed_channels, h, w)."""
        return feat


class ConvSimilarity(SimilarityBlock):
    """SSP's learned block: concat -> 3x3 conv-BN-ReLU -> 3x3 conv-BN-ReLU -> 1x1 -> sigmoid.

    With ``hidden = d`` (the spec) the block has 207,841 parameters for d = 96. A smaller
    ``hidden`` keeps the same layout for light backbones (the ``lite`` preset).
    """

    def __init__(self, channels: int, hidden: int = 0) -> None:
        super().__init__(channels)
        hidden = hidden or channels
        self.block = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden // 2, 3, padding=1),
            nn.BatchNorm2d(hidden // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden // 2, 1, 1),
        )

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return s (B, 1, h, w) from ê_{t-1} and e_t (B, d, h, w)."""
        return torch.sigmoid(self.block(torch.cat([prev_warped, cur], dim=1)))


class EmbedSimilarity(SimilarityBlock):
    """Light learned block (ours, for the ``lite`` preset): embed each frame, then compare.

    embed: Conv1x1(d -> k, bias), applied to every frame once; the k-channel embedding is what
    the state keeps and the next frame warps. head: concat[ê_{t-1}, e_t] (2k) -> Conv3x3(2k -> k,
    bias) -> BN -> ReLU -> Conv1x1(k -> 1) -> sigmoid. Out of the previous view ê_{t-1} is 0, as
    in the spec's block. With d = 32 and k = 4 (lite) it has 437 parameters. Why: on the lite
    network the spec's layout (3x3 conv over the 2d = 64-channel concat, 32-channel feature
    warp) cost ~6 % of the image step on one CPU thread; this block and its 4-channel warp cost
    a fraction of a millisecond (docs/ARCHITECTURE.md, "lite").
    """

    def __init__(self, channels: int, hidden: int = 0) -> None:
        hidden = hidden or channels
        super().__init__(hidden)
        self.project = nn.Conv2d(channels, hidden, 1)
        self.block = nn.Sequential(
            nn.Conv2d(2 * hidden, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """Return the k-channel embedding (B, k, h, w) of a stage-1 feature (B, d, h, w)."""
        return self.project(feat)

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return s (B, 1, h, w) from the embeddings ê_{t-1} and e_t (B, k, h, w)."""
        return torch.sigmoid(self.block(torch.cat([prev_warped, cur], dim=1)))


class CosineSimilarity(SimilarityBlock):
    """Parameter-free ``cossim`` ablation: clamp(cos(e_t, ê_{t-1}), 0, 1)^4, capped at 0.95."""

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return s (B, 1, h, w); 0 where the warped feature is all zeros (out of view)."""
        cos = F.cosine_similarity(cur, prev_warped, dim=1, eps=1e-8).unsqueeze(1)
        return cos.clamp(0.0, 1.0).pow(4).clamp(max=0.95)


class ConstantSimilarity(SimilarityBlock):
    """``constant`` ablation ("no interpolation"): s = 0, the output is the current frame's."""

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return zeros (B, 1, h, w)."""
        return torch.zeros_like(cur[:, :1])


class ReuseSimilarity(SimilarityBlock):
    """``reuse``: s = 1, the output is the warped previous output."""

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return ones (B, 1, h, w)."""
        return torch.ones_like(cur[:, :1])


class AverageSimilarity(SimilarityBlock):
    """``avg``: one learnable scalar s, initialised at 0.5.

    Decision (the spec gives no range): the scalar is stored as a logit and passed through a
    sigmoid, so s stays a convex weight in (0, 1) during training; still one parameter.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.logit = nn.Parameter(torch.zeros(()))  # sigmoid(0) = 0.5

    def forward(self, prev_warped: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Return the scalar broadcast to (B, 1, h, w)."""
        return torch.sigmoid(self.logit).expand_as(cur[:, :1])


def create_similarity(sim_op: str, channels: int, hidden: int = 0) -> SimilarityBlock:
    """Return the similarity block ``sim_op`` for stage-1 features with ``channels`` channels."""
    if sim_op in ("conv", "embed"):
        return (ConvSimilarity if sim_op == "conv" else EmbedSimilarity)(channels, hidden)
    blocks = {"cosine": CosineSimilarity, "constant": ConstantSimilarity,
              "reuse": ReuseSimilarity, "average": AverageSimilarity}
    if sim_op not in blocks:
        raise ValueError(f"unknown sim_op {sim_op!r}; allowed: conv, embed, {', '.join(blocks)}")
    return blocks[sim_op](channels)
