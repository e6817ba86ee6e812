"""Optical flow for the temporal losses and the TC metric, behind one small interface.

Convention everywhere in this module (SSP_SPEC §4.2/§4.3): a flow ``F`` from image ``a`` to
image ``b`` satisfies ``a(p) ≈ b(p + F(p))``, in pixels, channel 0 = x (column), 1 = y (row).
``warp_with_flow(x_b, F)`` therefore resamples something that lives in ``b``'s frame into
``a``'s frame: ``warp(x, F)(p) = x(p + F(p))``.

Providers (``create_flow_provider``):

- ``dis``  OpenCV DIS (default; offline, no weights, ~15-60 ms per 720p pair on this CPU).
- ``raft`` torchvision ``raft_large`` with weights the user gives (a local file, or the explicit
  word ``"download"`` for torchvision's ``C_T_V1`` port of raft-things, which needs network).

Ground-truth flow is not an image-to-image provider: it is a property of the dataset (the
synthetic generator stores it). Training and evaluation therefore ask for ``"gt"`` by name as a
*flow source* (``FLOW_SOURCES``) and read the sample's ``flow`` tensor instead of calling a
provider; ``create_flow_provider("gt")`` says so instead of returning something that cannot work.

Example::

    >>> import numpy as np
    >>> a = np.zeros((64, 96, 3), np.uint8); a[20:40, 30:50] = 255
    >>> b = np.roll(a, 3, axis=1)                      # b is a shifted right by 3 px
    >>> f = create_flow_provider("dis").flow(a, b)     # (64, 96, 2) float32, f[..., 0] ≈ 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
# DIS flow and label warping live in the core (the TC metric of ssp_replay and ssp_eval);
# re-exported here so that the flow providers have one home for their users.
from ssp_perception.config import IMAGENET_MEAN, IMAGENET_STD
from ssp_perception.consistency import (check_flow_pair, DIS_PRESETS, DISFlow,  # noqa: F401
                                        warp_labels)
import torch
import torch.nn.functional as F

FLOW_SOURCES = ("gt", "dis", "raft")


@runtime_checkable
class FlowProvider(Protocol):
    """Estimate dense optical flow between two RGB uint8 images of the same size."""

    name: str

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return the (H, W, 2) float32 flow ``F`` with ``a(p) ≈ b(p + F(p))``."""
        ...


class RAFTFlow:
    """torchvision RAFT-large with user-given weights (20 refinement iterations by default).

    Quirk decided (SSP_SPEC §12.1): Ref feeds RAFT ImageNet-normalised frames because RAFT's own
    input scaling was commented out. We feed what the weights were trained on, [-1, 1] RGB;
    the flow is better and our numbers need not match Ref's flow bit for bit.
    """

    name = "raft"

    def __init__(self, weights: str | Path, iterations: int = 20, device: str = "cpu") -> None:
        from torchvision.models.optical_flow import raft_large, Raft_Large_Weights
        if iterations < 1:
            raise ValueError(f"RAFT iterations must be >= 1, got {iterations}")
        self.iterations = iterations
        self.device = torch.device(device)
        if str(weights) == "download":
            # Explicit opt-in only: torchvision's port of raft-things (SSP_SPEC §4.3).
            model = raft_large(weights=Raft_Large_Weights.C_T_V1, progress=True)
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(
                    f"RAFT weights {path} not found; give a raft_large state dict "
                    "(.pth loaded with weights_only=True, or .safetensors), or 'download'")
            model = raft_large(weights=None, progress=False)
            model.load_state_dict(_load_state_dict(path))
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def flow_batch(self, a: torch.Tensor, b: torch.Tensor,
                   iterations: int | None = None) -> torch.Tensor:
        """Return (B, 2, H, W) flows for (B, 3, H, W) float RGB batches in [0, 1].

        ``iterations`` overrides the refinement count of this call (Ref uses 20 for the TC
        loss and 15 for the KD fusion with the same network).
        """
        h, w = a.shape[-2:]
        # RAFT needs sides divisible by 8 and at least 128 px (its 4-level correlation
        # pyramid): replicate-pad, then crop the flow back.
        ph, pw = max(128 - h, (-h) % 8), max(128 - w, (-w) % 8)
        a = F.pad(a * 2 - 1, (0, pw, 0, ph), mode="replicate").to(self.device)
        b = F.pad(b * 2 - 1, (0, pw, 0, ph), mode="replicate").to(self.device)
        flows = self.model(a, b, num_flow_updates=iterations or self.iterations)
        return flows[-1][..., :h, :w].float()

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return the (H, W, 2) float32 flow from ``a`` to ``b``."""
        check_flow_pair(a, b)
        ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0
        tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255.0
        return self.flow_batch(ta, tb)[0].permute(1, 2, 0).cpu().numpy()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # Original RAFT checkpoints were saved from DataParallel ("module." prefixes).
    return {k.removeprefix("module."): v for k, v in state.items()}


def create_flow_provider(name: str, weights: str | Path | None = None, *,
                         iterations: int = 20, device: str = "cpu",
                         dis_preset: str = "medium") -> FlowProvider:
    """Return the flow provider called ``name`` (``dis`` or ``raft``).

    ``raft`` needs ``weights``: a local state-dict file or the explicit word ``"download"``.
    """
    if name == "dis":
        return DISFlow(preset=dis_preset)
    if name == "raft":
        if weights is None:
            raise ValueError("flow provider 'raft' needs weights: a raft_large state-dict path "
                             "or 'download' (network); use 'dis' for an offline flow")
        return RAFTFlow(weights, iterations=iterations, device=device)
    if name == "gt":
        raise ValueError("'gt' flow is read from the dataset sample ('flow' key, cur->prev), "
                         "not computed from images; build the dataset with with_flow=True")
    raise ValueError(f"unknown flow provider {name!r}; allowed: dis, raft (and 'gt' as a "
                     "dataset flow source)")


def denormalize_to_uint8(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Return (B, H, W, 3) uint8 RGB from a (B, 3, H, W) ImageNet-normalised batch."""
    m = x.new_tensor(mean).view(1, 3, 1, 1)
    s = x.new_tensor(std).view(1, 3, 1, 1)
    rgb = ((x.detach().float() * s + m) * 255.0).round().clamp(0, 255)
    return rgb.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batch_flow(provider: FlowProvider, a: torch.Tensor, b: torch.Tensor,
               iterations: int | None = None) -> torch.Tensor:
    """Return (B, 2, H, W) flows from ``a`` to ``b`` for ImageNet-normalised (B, 3, H, W) batches.

    RAFT runs batched on the tensors (``iterations`` overrides its refinement count); other
    providers run per sample on uint8 copies and have no iterations.
    """
    if isinstance(provider, RAFTFlow):
        m = a.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        s = a.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return provider.flow_batch(a * s + m, b * s + m, iterations).to(a.device)
    ua, ub = denormalize_to_uint8(a), denormalize_to_uint8(b)
    flows = [torch.from_numpy(provider.flow(x, y)) for x, y in zip(ua, ub)]
    return torch.stack(flows).permute(0, 3, 1, 2).to(a.device)  # (B, H, W, 2) -> (B, 2, H, W)


def _sample_grid(flow: torch.Tensor) -> torch.Tensor:
    """Return the normalised (B, H, W, 2) grid of ``p + F(p)`` for grid_sample."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype),
                            indexing="ij")
    x = xs + flow[:, 0]  # (B, H, W)
    y = ys + flow[:, 1]
    # Decision (SSP_SPEC §4.2): Ref normalises by (W-1, H-1) but samples with
    # align_corners=False, a half-pixel inconsistency. We normalise by (W-1, H-1) *and* use
    # align_corners=True, so a zero flow is an exact identity warp.
    gx = 2.0 * x / max(w - 1, 1) - 1.0
    gy = 2.0 * y / max(h - 1, 1) - 1.0
    return torch.stack((gx, gy), dim=-1)


def warp_with_flow(x: torch.Tensor, flow: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Return ``x`` warped by ``flow``: ``out(p) = x(p + F(p))``, zeros outside the view.

    Shapes: ``x`` (B, C, H, W) float, ``flow`` (B, 2, H, W) in pixels. ``mode`` is
    ``"nearest"`` (losses, metrics; SSP_SPEC §4.2) or ``"bilinear"`` (DFF/NetWarp features).
    Gradients flow into ``x`` (and, for bilinear, into ``flow``).
    """
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"warp mode must be 'nearest' or 'bilinear', got {mode!r}")
    if x.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected x (B,C,H,W) and flow (B,2,H,W), got {tuple(x.shape)} and "
                         f"{tuple(flow.shape)}")
    if x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"x {tuple(x.shape)} and flow {tuple(flow.shape)} differ in batch "
                         "or size")
    grid = _sample_grid(flow.to(x.dtype) if x.is_floating_point() else flow.float())
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def in_view_mask(flow: torch.Tensor) -> torch.Tensor:
    """Return the (B, 1, H, W) bool mask of pixels whose target ``p + F(p)`` is inside the image.

    This is the nearest-sampling footprint, i.e. the pixels ``warp_with_flow`` does not zero.
    """
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype),
                            indexing="ij")
    x = torch.round(xs + flow[:, 0])
    y = torch.round(ys + flow[:, 1])
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1)


def forward_backward_occlusion(flow_ab: torch.Tensor, flow_ba: torch.Tensor,
                               alpha: float = 0.01, beta: float = 0.5,
                               compose: bool = True) -> torch.Tensor:
    """Return the (B, 1, H, W) bool occlusion mask of ``a``'s pixels from a flow pair.

    ``flow_ab`` maps a -> b and ``flow_ba`` maps b -> a, both (B, 2, H, W). A pixel is occluded
    when ``|F_ab(p) + F_ba'(p)|² > alpha·(|F_ab(p)|² + |F_ba'(p)|²) + beta`` (SSP_SPEC §4.5).

    Quirk decided (SSP_SPEC §12.3): Ref takes ``F_ba' = F_ba(p)`` at the same pixel, which is
    only right for tiny motion. With ``compose=True`` (our default) ``F_ba' = F_ba(p + F_ab(p))``
    (bilinear), the standard consistency test; ``compose=False`` reproduces Ref. Pixels whose
    target leaves the image are occluded.
    """
    back = warp_with_flow(flow_ba, flow_ab, mode="bilinear") if compose else flow_ba
    diff = (flow_ab + back).pow(2).sum(1, keepdim=True)
    mag = flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)
    occluded = diff > alpha * mag + beta
    if compose:
        occluded |= ~in_view_mask(flow_ab)
    return occluded
