"""The ``Backend`` interface: one network, two pure steps, whatever runtime executes them.

A backend runs the two stateless graphs of an SSP model (docs/ARCHITECTURE.md, key contracts):

* ``image_step(image) -> (logits, feat)``: the first frame of a stream, or any frame without
  usable state.
* ``ssp_step(image, prev_logits, prev_feat, homography, use_prev) -> (logits, feat, sim)``:
  warp the previous fused logits and stage-1 embeddings with ``homography`` (previous ->
  current, network pixels), predict the similarity ``sim`` and fuse (SSP_SPEC §2.7).

Shapes (B = batch, C = classes, k = channels of the similarity block's stage-1 embedding,
(H, W) = network input, multiples of 32, (h, w) = the model's fusion resolution: (H, W) when
``upsample_before_mixing`` is true, (H/4, W/4) otherwise, e.g. lite): ``image`` (B, 3, H, W)
normalised float; ``logits`` (B, C, h, w); ``feat`` (B, k, H/4, W/4); ``homography`` (B, 3, 3);
``use_prev`` (B,) 0/1; ``sim`` (B, 1, h, w). ``SSPModel.output_logits`` brings logits to the
input size. The state the caller keeps
is exactly what the steps return, so backends hold no per-stream state and one backend serves
many streams. Inputs and outputs are torch tensors on ``device``; backends that run elsewhere
(onnxruntime, TensorRT) convert at their boundary.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

DTYPES = ("float32", "float16", "bfloat16")


@runtime_checkable
class Backend(Protocol):
    """Run an SSP model's image step and SSP step on some runtime."""

    name: str
    """Runtime name, e.g. "torch"."""
    device: torch.device
    """Device that inputs must be on and outputs come back on."""
    dtype: str
    """Compute precision: "float32", "float16" or "bfloat16"."""
    input_size: tuple[int, int] | None
    """The only (H, W) the backend accepts, or None when any multiple of 32 works."""
    num_classes: int
    """Number of classes C of the logits."""

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, feat) for a normalised (B, 3, H, W) image."""

    def ssp_step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor,
                 use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim) for one SSP step (shapes in the module docstring)."""

    def synchronize(self) -> None:
        """Wait until queued device work is done (for honest timings); no-op on CPU."""


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is a supported precision name, else raise a clear error."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


__all__ = ["Backend", "DTYPES", "check_dtype"]
