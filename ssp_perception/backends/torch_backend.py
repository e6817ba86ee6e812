"""PyTorch backend: eager or ``torch.compile``, fp32 / fp16 / bf16 autocast, optional CUDA graphs.

Precision: weights stay float32 and ``torch.autocast`` runs the matmuls and convolutions in the
requested precision, so one artifact serves every precision. Only the image network runs under
autocast; the SSP fusion (homography warps, similarity block, blend) and the returned tensors,
hence the stream state, stay float32 (see ``TorchBackend._run_ssp``). float16 is GPU-only; bfloat16
also runs on CPUs with autocast support.

CUDA graphs replay a captured step without launching kernels one by one (the win at batch 1 is
large on small models). They need static shapes and static memory, so each distinct input
signature is captured once (at most ``max_graphs``), inputs are copied into the captured
buffers and outputs are cloned out: the state a stream keeps must not alias buffers the next
replay (possibly for another stream) overwrites.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import threading

import torch
from torch import nn

from .base import check_dtype

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchBackend:
    """Run an ``SSPModel`` with PyTorch on one device."""

    name = "torch"

    # ``compile`` mirrors torch.compile's name; the builtin is not used in this scope.
    def __init__(self, model: nn.Module, device: str | torch.device = "cpu",
                 dtype: str = "float32", compile: bool = False,  # noqa: A002
                 cuda_graphs: bool = False, max_graphs: int = 4) -> None:
        self.device = _resolve_device(device)
        self.dtype = check_dtype(dtype)
        if self.dtype == "float16" and self.device.type != "cuda":
            raise ValueError(f"dtype 'float16' needs a CUDA device (got {self.device}); "
                             f"use 'float32' or 'bfloat16' on CPU")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device (got {self.device})")
        if cuda_graphs and compile:
            raise ValueError("choose one of compile=True and cuda_graphs=True; for both, "
                             "torch.compile(mode='reduce-overhead') already uses CUDA graphs")
        for method in ("image_step", "step"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model {type(model).__name__} has no {method}(); expected an "
                                f"SSPModel from ssp_perception.models.create_model")
        self.model = model.eval().to(self.device)
        self.num_classes = int(model.cfg.num_classes)
        # Any multiple of 32 works eagerly; a static shape is enforced by CUDA graph capture.
        self.input_size: tuple[int, int] | None = None
        self.compiled = bool(compile)
        self.cuda_graphs = bool(cuda_graphs)
        image_fn, ssp_fn = self._run_image, self._run_ssp
        if compile:
            # dynamic=False: a stream's shape is fixed, so specialise and avoid guards on sizes.
            image_fn = torch.compile(image_fn, dynamic=False)
            ssp_fn = torch.compile(ssp_fn, dynamic=False)
        self._image_fn = _inference(image_fn)
        self._ssp_fn = _inference(ssp_fn)
        if cuda_graphs:
            self._image_fn = _CudaGraphRunner(self._image_fn, max_graphs)
            self._ssp_fn = _CudaGraphRunner(self._ssp_fn, max_graphs)

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (B, C, h, w) at the fusion resolution, feat (B, k, H/4, W/4))."""
        _check_image(image, self.device)
        return self._image_fn(image)

    def ssp_step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor,
                 use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim (B, 1, h, w)) for one SSP step (fusion resolution)."""
        _check_image(image, self.device)
        b = image.shape[0]
        if prev_logits.shape[0] != b or prev_feat.shape[0] != b:
            raise ValueError(f"state batch {prev_logits.shape[0]}/{prev_feat.shape[0]} does not "
                             f"match image batch {b}")
        if homography.shape != (b, 3, 3) or use_prev.shape != (b,):
            raise ValueError(f"homography must be ({b}, 3, 3) and use_prev ({b},), got "
                             f"{tuple(homography.shape)} and {tuple(use_prev.shape)}")
        return self._ssp_fn(image, prev_logits, prev_feat,
                            homography.to(self.device, torch.float32),
                            use_prev.to(self.device, torch.float32))

    def synchronize(self) -> None:
        """Wait for queued CUDA work so that wall-clock timings are honest; no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the image network under autocast; return float32 (logits, feat)."""
        with torch.autocast(self.device.type, dtype=_TORCH_DTYPES[self.dtype],
                            enabled=self.dtype != "float32"):
            logits, feat = self.model.image_step(image)
        return logits.float(), feat.float()

    def _run_ssp(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor, use_prev: torch.Tensor):
        """Run the SSP step: image network in the compute precision, fusion in float32.

        In float32 this is exactly ``model.step``. With fp16/bf16 only the network is under
        autocast: the warps sample at homography-mapped coordinates, which half precision
        cannot hold to sub-pixel accuracy on a 1280-wide frame, and the similarity block and
        blend are a small share of the cost. The state therefore stays float32 too.
        """
        if self.dtype == "float32":
            return self.model.step(image, prev_logits, prev_feat, homography, use_prev)
        logits, feat = self._run_image(image)
        out, sim = self.model.fuse(logits, feat, prev_logits.float(), prev_feat.float(),
                                   homography, use_prev)
        return out, feat, sim


def _inference(fn: Callable) -> Callable:
    """Return ``fn`` run under ``torch.inference_mode`` (no autograd bookkeeping)."""
    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return tuple(fn(*args))
    return run


class _CudaGraphRunner:
    """Capture ``fn`` once per input signature into a CUDA graph and replay it."""

    def __init__(self, fn: Callable, max_graphs: int) -> None:
        self._fn = fn
        self._max = max_graphs
        self._graphs: dict[tuple, tuple[list[torch.Tensor], tuple, torch.cuda.CUDAGraph]] = {}
        # Replays share static buffers: copy-in, replay, clone-out must not interleave.
        self._lock = threading.Lock()

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        with self._lock, torch.inference_mode():
            entry = self._graphs.get(key)
            if entry is None:
                if len(self._graphs) >= self._max:
                    raise RuntimeError(
                        f"CUDA graphs need static shapes: already captured {len(self._graphs)} "
                        f"input signatures, refusing {key}; fix the stream input_size")
                entry = self._graphs[key] = self._capture(args)
            static_in, static_out, graph = entry
            for buf, a in zip(static_in, args):
                buf.copy_(a)
            graph.replay()
            return tuple(o.clone() for o in static_out)

    def _capture(self, args: tuple[torch.Tensor, ...]):
        static_in = [a.clone() for a in args]
        # Warm up on a side stream so lazy initialisation (cuDNN autotuning, allocator) is
        # not recorded into the graph, as the PyTorch CUDA-graph recipe prescribes.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._fn(*static_in)
        return static_in, tuple(static_out), graph


def create(model_or_artifact: nn.Module | str | Path, **kw) -> TorchBackend:
    """Build a ``TorchBackend`` from an ``SSPModel`` or the path of an artifact."""
    if isinstance(model_or_artifact, (str, Path)):
        from ..artifact import load_artifact
        model, _ = load_artifact(model_or_artifact)
    else:
        model = model_or_artifact
    return TorchBackend(model, **kw)


def _resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {dev} requested but CUDA is not available on this machine")
    return dev


def _check_image(image: torch.Tensor, device: torch.device) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if image.shape[2] % 32 or image.shape[3] % 32:
        raise ValueError(f"image H and W must be multiples of 32, got {tuple(image.shape[2:])}")
    if image.device.type != device.type:
        raise ValueError(f"image is on {image.device}, backend runs on {device}")


__all__ = ["TorchBackend", "create"]
