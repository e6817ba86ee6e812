"""onnxruntime backend: the exported image and SSP graphs on the CPU or CUDA execution provider.

Session options (tuned on the lite preset, numbers in docs/DEPLOYMENT.md):

* graph optimisation ``all`` (constant folding, Conv+BN/activation fusion, layout transforms);
* ``intra_op_num_threads``: 0 follows ``torch.get_num_threads()``, so the one thread setting
  of the process (the node's and ``ssp_bench``'s ``threads``) applies to both runtimes;
* sequential execution (``inter_op`` 1): batch-1 graphs have almost no parallel branches;
* no spin-waiting of idle intra-op threads (``spin=False``): the node shares its cores with
  registration and ROS callbacks, and spinning threads take CPU from them. Measured here with
  2 threads on a loaded 2-core machine: 234 ms wall / 91 ms CPU per lite image step without
  spinning, 372 ms / 108 ms with it. ``spin=True`` suits cores reserved for inference.

On CUDA, inputs and outputs are bound in place (IO binding) to torch CUDA tensors, so frames
and state never go through host memory. On CPU, torch tensors are handed over as zero-copy
numpy views and outputs come back the same way.

``onnxruntime`` is imported lazily: ``ssp_perception`` runs without it (``pip install
onnxruntime`` for CPU, ``onnxruntime-gpu`` for the CUDA provider).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine_cache import EngineCache
from .onnx_graphs import (DEFAULT_OPSET, GRAPHS, INPUT_NAMES, OnnxSources, OUTPUT_NAMES,
                          resolve_onnx)

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtConfig:
    """Configure onnxruntime sessions."""

    device: str = "cpu"
    """"cpu" (CPUExecutionProvider) or "cuda" / "cuda:N" (CUDAExecutionProvider, GPU N)."""
    threads: int = 0
    """Intra-op threads of the CPU provider; 0 = ``torch.get_num_threads()`` at creation."""
    optimization: str = "all"
    """Graph optimisation level: "disable", "basic", "extended" or "all"."""
    spin: bool = False
    """Let idle intra-op threads spin-wait (lower latency on reserved cores, CPU otherwise)."""

    def __post_init__(self) -> None:
        dev = torch.device(self.device)  # raises on a malformed device string
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"OrtConfig.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"OrtConfig.threads must be an integer >= 0 (0 = default), "
                             f"got {self.threads!r}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"OrtConfig.optimization {self.optimization!r} is not one of "
                             f"{', '.join(OPTIMIZATION_LEVELS)}")


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise RuntimeError("the onnxruntime backend needs the onnxruntime package "
                           "(onnxruntime-gpu for CUDA)") from err
    return ort


def make_session(model: Path | bytes, config: OrtConfig) -> Any:
    """Return an ``InferenceSession`` for ``model`` with ``config``'s provider and options."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[config.optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = config.threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                     "1" if config.spin else "0")
    options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise
    device = torch.device(config.device)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(f"device {config.device!r} needs onnxruntime's "
                               "CUDAExecutionProvider; this onnxruntime has "
                               f"{ort.get_available_providers()} (install onnxruntime-gpu)")
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                     "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=providers)
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        # onnxruntime falls back to the CPU when the CUDA libraries fail to load: say so.
        raise RuntimeError("onnxruntime could not start the CUDA provider (CUDA/cuDNN "
                           "libraries missing or mismatched); see its log")
    return session


class OnnxRuntimeBackend:
    """Run the exported image and SSP graphs with onnxruntime (fp32)."""

    name = "onnxruntime"
    dtype = "float32"
    precision = "fp32"

    def __init__(self, sources: OnnxSources, config: OrtConfig = OrtConfig()) -> None:
        """Open one session per graph of ``sources`` with ``config``."""
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", 0)
        self.input_size: tuple[int, int] | None = sources.input_size
        self.num_classes = sources.num_classes
        self.metadata = sources.metadata
        self.sources = sources
        self._sessions = {g: make_session(sources.graphs[g], config) for g in GRAPHS}
        self._out_shapes = {g: {o.name: tuple(o.shape) for o in s.get_outputs()}
                            for g, s in self._sessions.items()}

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (1, C, H/r, W/r), feat (1, k, H/4, W/4)); r = the fusion stride."""
        self._check_image(image)
        out = self._run("image", {"image": image})
        return out["logits"], out["feat"]

    def ssp_step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor,
                 use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim), all at the fusion resolution, for one SSP step."""
        self._check_image(image)
        if homography.shape != (1, 3, 3) or use_prev.shape != (1,):
            raise ValueError(f"homography must be (1, 3, 3) and use_prev (1,), got "
                             f"{tuple(homography.shape)} and {tuple(use_prev.shape)}")
        out = self._run("ssp", {"image": image, "prev_logits": prev_logits,
                                "prev_feat": prev_feat, "homography": homography,
                                "use_prev": use_prev})
        return out["logits"], out["feat"], out["sim"]

    def synchronize(self) -> None:
        """Wait for queued CUDA work (runs here are already synchronous); no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _check_image(self, image: torch.Tensor) -> None:
        expected = (1, 3, *self.input_size)
        if tuple(image.shape) != expected:
            raise ValueError(f"image must be {expected} (the ONNX graphs are exported for "
                             f"{self.input_size[0]}x{self.input_size[1]}, batch 1), got "
                             f"{tuple(image.shape)}")
        if image.device.type != self.device.type:
            raise ValueError(f"image is on {image.device}, backend runs on {self.device}")

    def _run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return self._run_bound(graph, inputs)
        session = self._sessions[graph]
        # .numpy() on a contiguous float32 CPU tensor is a view: no copy on the way in.
        feed = {n: np.ascontiguousarray(inputs[n].detach().to(torch.float32).numpy())
                for n in INPUT_NAMES[graph]}
        names = list(OUTPUT_NAMES[graph])
        return {n: torch.from_numpy(v) for n, v in zip(names, session.run(names, feed))}

    def _run_bound(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        session = self._sessions[graph]
        binding = session.io_binding()
        index = self.device.index or 0
        keep = []
        for name in INPUT_NAMES[graph]:
            x = inputs[name].detach().to(self.device, torch.float32).contiguous()
            keep.append(x)
            binding.bind_input(name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        # Fresh outputs each call: the caller feeds logits back as prev_logits next step.
        outputs = {n: torch.empty(s, dtype=torch.float32, device=self.device)
                   for n, s in self._out_shapes[graph].items()}
        for name, y in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, tuple(y.shape), y.data_ptr())
        # onnxruntime runs on its own CUDA stream: the inputs torch queued must be ready.
        torch.cuda.current_stream(self.device).synchronize()
        session.run_with_iobinding(binding)
        return outputs


def create(model_or_artifact: nn.Module | str | os.PathLike, device: str = "cpu",
           dtype: str = "float32", threads: int = 0, optimization: str = "all",
           spin: bool = False, input_size: tuple[int, int] | None = None,
           opset: int = DEFAULT_OPSET,
           cache_dir: str | os.PathLike | None = None) -> OnnxRuntimeBackend:
    """Build an :class:`OnnxRuntimeBackend` from a model, an artifact or an ONNX folder.

    Artifacts and in-memory models are exported once (``ssp_perception.backends.onnx_graphs``)
    into the cache (``cache_dir``, default ``$SSP_ENGINE_CACHE`` or ~/.cache/ssp_perception).
    The graphs are float32; ``dtype`` is accepted for the common backend signature only.
    """
    if dtype != "float32":
        raise ValueError(f"the onnxruntime backend runs the float32 graphs, got dtype {dtype!r};"
                         " use the tensorrt backend (fp16/int8) or torch (float16/bfloat16)")
    config = OrtConfig(device=device, threads=threads, optimization=optimization, spin=spin)
    sources = resolve_onnx(model_or_artifact, input_size, opset, EngineCache(cache_dir))
    return OnnxRuntimeBackend(sources, config)


__all__ = ["OPTIMIZATION_LEVELS", "OnnxRuntimeBackend", "OrtConfig", "create", "make_session"]
