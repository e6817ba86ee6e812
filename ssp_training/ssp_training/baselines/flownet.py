"""The optical flow inside DFF and NetWarp: DIS (no parameters) or a trainable RAFT-large.

Both give the flow from the current frame to the previous one, ``cur(p) ≈ prev(p + F(p))``
(SSP_SPEC §8: ``F = RAFT(I_t, I_{t-1})``), so ``warp_with_flow(prev_thing, F)`` brings
something of the previous frame into the current one.
"""

from __future__ import annotations

from pathlib import Path

from ssp_perception.config import IMAGENET_MEAN, IMAGENET_STD
import torch
from torch import nn
import torch.nn.functional as F

from .config import FlowConfig
from ..flow import batch_flow, DISFlow

RAFT_MIN_SIDE = 128


class _LazyDIS:
    """OpenCV DIS built on first use and dropped when pickled (cv2 objects do not pickle).

    Keeps the baseline deep-copyable and picklable (EMA copies, spawn-based workers).
    """

    def __init__(self, preset: str) -> None:
        self.preset = preset
        self._flow: DISFlow | None = None

    def __getstate__(self) -> dict:
        return {"preset": self.preset, "_flow": None}

    def get(self) -> DISFlow:
        """Return the DIS estimator, building it once."""
        if self._flow is None:
            self._flow = DISFlow(preset=self.preset)
        return self._flow


class BaselineFlow(nn.Module):
    """Estimate (B, 2, H, W) flows current -> previous from ImageNet-normalised frames."""

    def __init__(self, cfg: FlowConfig, load_weights: bool = True) -> None:
        """Build the estimator; ``load_weights=False`` skips reading RAFT weights (artifacts)."""
        super().__init__()
        self.cfg = cfg
        self.raft: nn.Module | None = None
        self._dis: _LazyDIS | None = None
        if cfg.source == "dis":
            self._dis = _LazyDIS(cfg.dis_preset)
            return
        from torchvision.models.optical_flow import raft_large
        self.raft = raft_large(weights=None, progress=False)
        if load_weights:
            self.raft.load_state_dict(_raft_state_dict(cfg.raft_weights))
        if not cfg.finetune:
            self.raft.requires_grad_(False)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def train(self, mode: bool = True) -> BaselineFlow:
        """Set train mode; a frozen RAFT stays in eval mode (its BatchNorm statistics fixed)."""
        super().train(mode)
        if self.raft is not None and not self.cfg.finetune:
            self.raft.eval()
        return self

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Return the flow (B, 2, H, W) from ``cur`` to ``prev``, both (B, 3, H, W) normalised."""
        if self._dis is not None:
            with torch.no_grad():
                return batch_flow(self._dis.get(), cur, prev).to(cur.dtype)
        grad = self.training and self.cfg.finetune and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            return self._raft(cur, prev)

    def _raft(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h, w = cur.shape[-2:]
        # RAFT wants [-1, 1] RGB (what its weights were trained on; SSP_SPEC §12.1 decided
        # like ssp_training.flow), sides divisible by 8 and at least 128 (its correlation
        # pyramid); replicate padding keeps the flow of the real pixels.
        a = (cur * self._std + self._mean) * 2 - 1
        b = (prev * self._std + self._mean) * 2 - 1
        ph, pw = (max(RAFT_MIN_SIDE, _ceil8(h)) - h, max(RAFT_MIN_SIDE, _ceil8(w)) - w)
        if ph or pw:
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        flows = self.raft(a, b, num_flow_updates=self.cfg.iterations)
        return flows[-1][..., :h, :w]


def _ceil8(n: int) -> int:
    return -(-n // 8) * 8


def _raft_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not path:
        raise ValueError("FlowConfig.source 'raft' needs raft_weights: a torchvision raft_large "
                         "state dict (.pth or .safetensors); nothing is downloaded")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"RAFT weights {file} not found")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return ``flow`` (B, 2, H, W) resized to ``size`` (h, w) with its vectors rescaled."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = flow.new_tensor([size[1] / w, size[0] / h]).view(1, 2, 1, 1)  # x by w, y by h
    return out * scale
