"""TensorRT backend: engines built from the exported ONNX graphs, fp32/fp16/INT8, cached on disk.

* Build: ONNX parser -> network -> ``BuilderConfig`` (FP16 flag, or INT8 + FP16 with an
  ``IInt8EntropyCalibrator2`` fed from dataset frames) -> ``build_serialized_network``. The
  network is specialised to one input shape (an optimisation profile with min = opt = max),
  which is what lets TensorRT pick its fastest kernels, and what the cache key records.
* Cache: :class:`~ssp_perception.backends.engine_cache.EngineCache`, keyed by GPU model and
  compute capability, TensorRT version, artifact hash, graph, shape and precision (and the
  INT8 calibration table). Anything that changes misses the cache and rebuilds; an engine that
  exists but no longer deserialises is rebuilt too, rather than failing the node.
* Run: one execution context per graph, named I/O tensors bound to torch CUDA tensors
  (``set_tensor_address``) and ``execute_async_v3`` on torch's current stream, so inputs and
  outputs stay on the GPU and the node's kornia registration/warping works on them directly.

``tensorrt`` is imported lazily: importing this module never needs it, and
:func:`tensorrt_status` says why the backend cannot run on a machine (used by tests to skip).
Engines are built with fp32 I/O even in fp16/INT8 mode: the recurrent state is carried in fp32,
so reduced precision does not accumulate across frames, and the graph's interface is the same
for every precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine_cache import CacheKey, EngineCache, file_sha256, PRECISIONS, write_atomic
from .onnx_graphs import (DEFAULT_OPSET, GRAPHS, metadata_input_shapes, OnnxSources,
                          read_metadata, resolve_onnx)

LOG = logging.getLogger(__name__)
_WORKSPACE_GIB_MAX = 64.0


def tensorrt_status() -> tuple[bool, str]:
    """Return ``(usable, reason)``: whether TensorRT and a CUDA GPU are both present here."""
    try:
        import tensorrt as trt  # noqa: F401  (optional dependency, imported lazily)
    except ImportError as err:
        return False, f"the tensorrt Python package is not installed ({err})"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch (TensorRT needs an NVIDIA GPU)"
    return True, f"tensorrt {trt.__version__} on {gpu_description()}"


def _import_tensorrt() -> Any:
    usable, reason = tensorrt_status()
    if not usable:
        raise RuntimeError(f"the TensorRT backend cannot run here: {reason}. Use the "
                           "'onnxruntime' or 'torch' backend, or install TensorRT on a GPU host")
    import tensorrt as trt
    return trt


def gpu_description(device: int | None = None) -> str:
    """Return the GPU model and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)"."""
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """Configure one TensorRT engine build."""

    precision: str = "fp16"
    """Kernel precision: "fp32", "fp16" (default on GPUs) or "int8" (INT8 with FP16 fallback)."""
    workspace_gib: float = 4.0
    """Builder scratch-memory limit in GiB (Jetson Orin: 1-2; data-centre GPUs: 4-8)."""
    optimization_level: int = 3
    """TensorRT builder optimisation level 0..5 (3 is TensorRT's default; 5 builds slowest)."""
    calibration_frames: int = 64
    """Most frames fed to the INT8 entropy calibrator (TensorRT suggests about 500 for images;
    64-128 consecutive frames from several clips already settle the activation ranges here)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"TensorRTBuildConfig.precision {self.precision!r} is not one of "
                             f"{', '.join(PRECISIONS)}")
        if not 0.0 < self.workspace_gib <= _WORKSPACE_GIB_MAX:
            raise ValueError(f"TensorRTBuildConfig.workspace_gib must be in (0, "
                             f"{_WORKSPACE_GIB_MAX}], got {self.workspace_gib!r}")
        if not isinstance(self.optimization_level, int) or not 0 <= self.optimization_level <= 5:
            raise ValueError("TensorRTBuildConfig.optimization_level must be an integer 0..5, "
                             f"got {self.optimization_level!r}")
        if not isinstance(self.calibration_frames, int) or self.calibration_frames < 1:
            raise ValueError("TensorRTBuildConfig.calibration_frames must be a positive "
                             f"integer, got {self.calibration_frames!r}")


# --------------------------------------------------------------------------- INT8 calibration
def _make_calibrator(trt: Any, batches: Iterator[dict[str, np.ndarray]] | None,
                     cache_path: Path) -> Any:
    """Return an ``IInt8EntropyCalibrator2`` that feeds ``batches`` and keeps its table on disk.

    Each batch maps every network input name to a float32 array of the engine's input shape.
    With ``batches=None`` the calibrator only replays the table at ``cache_path`` (a rebuild on
    a new GPU or TensorRT version then needs no dataset).
    """
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise RuntimeError(
            f"tensorrt {trt.__version__} has no IInt8EntropyCalibrator2 (implicit INT8 "
            "calibration was removed); use precision 'fp16', or quantise the ONNX explicitly "
            "(Q/DQ nodes, e.g. NVIDIA ModelOpt) and build that")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feed calibration batches from host arrays through reusable CUDA buffers."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._device: dict[str, torch.Tensor] = {}  # kept alive while TensorRT reads them
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._batches is None:
                return None
            batch = next(self._batches, None)
            if batch is None:
                return None
            missing = [n for n in names if n not in batch]
            if missing:
                raise KeyError(f"calibration batch lacks network input(s) {missing}")
            for name in names:
                host = torch.from_numpy(np.ascontiguousarray(batch[name], dtype=np.float32))
                if name not in self._device or self._device[name].shape != host.shape:
                    self._device[name] = torch.empty(host.shape, dtype=torch.float32,
                                                     device="cuda")
                self._device[name].copy_(host)
            torch.cuda.synchronize()  # TensorRT reads the buffers on its own stream
            self.count += 1
            return [int(self._device[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            # Reusing a table only when no fresh data was given: new frames mean recalibrate.
            if self._batches is None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            write_atomic(cache_path, bytes(cache))

    return EntropyCalibrator()


# --------------------------------------------------------------------------------- building
def _network_flags(trt: Any) -> int:
    """Return network creation flags: explicit batch on TensorRT 8.x (JetPack 6.0), 0 from 10.

    TensorRT 10 made explicit batch the only mode and deprecated the flag; 8.x's ONNX parser
    needs it.
    """
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def build_engine(onnx_path: str | os.PathLike, build: TensorRTBuildConfig,
                 input_shapes: dict[str, tuple[int, ...]],
                 calibration: Iterable[dict[str, np.ndarray]] | None = None,
                 calibration_cache: str | os.PathLike | None = None) -> bytes:
    """Build and return a serialized engine for ``onnx_path`` at fixed ``input_shapes``.

    ``input_shapes`` maps each ONNX input name to its concrete shape (an optimisation profile
    with min = opt = max, so dynamic H/W exports are specialised here). INT8 needs either
    ``calibration`` (dicts of input name -> float32 array) or an existing
    ``calibration_cache`` file; the table the calibrator computes is written there.
    """
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                 int(build.workspace_gib * (1 << 30)))
    config.builder_optimization_level = build.optimization_level
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in input_shapes:
            raise ValueError(f"no shape given for ONNX input {name!r}; "
                             f"have {sorted(input_shapes)}")
        shape = tuple(int(v) for v in input_shapes[name])
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if build.precision == "fp32":
        # Strict fp32: TensorRT enables TF32 on Ampere+ by default (10-bit mantissa), which
        # would make the fp32 engine a poor reference for parity checks.
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    if build.precision == "int8":
        cache_path = Path(calibration_cache) if calibration_cache else None
        if calibration is None and (cache_path is None or not cache_path.is_file()):
            raise ValueError("INT8 needs calibration frames (ssp_export tensorrt --build-only "
                             "--precision int8 --calib-data <dataset>) or an existing "
                             "calibration table")
        if cache_path is None:
            raise ValueError("INT8 needs a calibration_cache path to keep the table in")
        config.set_flag(trt.BuilderFlag.INT8)
        batches = None if calibration is None else iter(calibration)
        config.int8_calibrator = _make_calibrator(trt, batches, cache_path)
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           f"({build.precision}); see the TensorRT log above")
    return bytes(serialized)


# ---------------------------------------------------------------------------------- running
_TRT_TO_TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32,
                 "INT64": torch.int64, "INT8": torch.int8, "BOOL": torch.bool,
                 "BF16": torch.bfloat16, "UINT8": torch.uint8}


class TensorRTEngine:
    """One deserialized engine and its execution context, run on torch CUDA tensors by name."""

    def __init__(self, serialized: bytes, device: int = 0) -> None:
        """Deserialize ``serialized`` on CUDA ``device``; raise RuntimeError if it cannot load."""
        trt = _import_tensorrt()
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(serialized)
            if self.engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine (built by another "
                                   "TensorRT version or for another GPU?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: _TRT_TO_TORCH[self.engine.get_tensor_dtype(n).name] for n in names}
        self.input_shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in self.input_names}
        for name, shape in self.input_shapes.items():
            self.context.set_input_shape(name, shape)
        self.output_shapes = {n: tuple(self.context.get_tensor_shape(n))
                              for n in self.output_names}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the engine on named CUDA inputs; return new output tensors (never reused buffers).

        Fresh outputs matter for the recurrent graph: the caller feeds this step's ``logits``
        back as ``prev_logits``, so writing the next step into the same buffer would alias them.
        torch's caching allocator makes the allocation cheap.
        """
        if sorted(inputs) != sorted(self.input_names):
            raise ValueError(f"engine inputs are {self.input_names}, got {sorted(inputs)}")
        keep = []
        for name in self.input_names:
            x = inputs[name]
            if tuple(x.shape) != self.input_shapes[name]:
                raise ValueError(f"input {name!r} has shape {tuple(x.shape)}; this engine was "
                                 f"built for {self.input_shapes[name]}")
            x = x.to(self.device, self._dtypes[name]).contiguous()
            keep.append(x)
            self.context.set_tensor_address(name, x.data_ptr())
        outputs = {n: torch.empty(self.output_shapes[n], dtype=self._dtypes[n],
                                  device=self.device) for n in self.output_names}
        for name, y in outputs.items():
            self.context.set_tensor_address(name, y.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")
        # The outputs are ordered on ``stream``; the inputs in ``keep`` must outlive the launch.
        for x in keep:
            x.record_stream(stream)
        return outputs


# ------------------------------------------------------------------------------ cache glue
def engine_key(onnx_path: str | os.PathLike, graph: str, input_size: tuple[int, int],
               precision: str, calibration_table: Path | None = None,
               source_sha256: str | None = None) -> CacheKey:
    """Return the cache key of the engine for ``onnx_path`` on this GPU and TensorRT version."""
    trt = _import_tensorrt()
    extra: tuple[tuple[str, str], ...] = ()
    if precision == "int8":
        if calibration_table is None or not calibration_table.is_file():
            raise ValueError("an INT8 engine key needs the calibration table it is built from")
        extra = (("calibration", hashlib.sha256(calibration_table.read_bytes()).hexdigest()),)
    return CacheKey(kind="tensorrt", graph=graph,
                    source_sha256=source_sha256 or file_sha256(onnx_path),
                    input_size=tuple(input_size), precision=precision,
                    device=gpu_description(), runtime=f"tensorrt {trt.__version__}", extra=extra)


def calibration_table_path(cache: EngineCache, graph: str, source_sha256: str,
                           input_size: tuple[int, int]) -> Path:
    """Return where the INT8 calibration table for one network and shape is kept.

    The table depends on the network and data, not on the GPU, so it is keyed without the
    device: a node moved to another GPU rebuilds its INT8 engine from it, without a dataset.
    """
    key = CacheKey(kind="tensorrt", graph=graph, source_sha256=source_sha256,
                   input_size=tuple(input_size), precision="int8", device="any",
                   runtime="calibration-table")
    return cache.path_for(key).with_suffix(".calib")


def load_or_build_engine(onnx_path: str | os.PathLike, graph: str, input_size: tuple[int, int],
                         input_shapes: dict[str, tuple[int, ...]], build: TensorRTBuildConfig,
                         cache: EngineCache, calibration: Iterable[dict] | None = None,
                         device: int = 0) -> tuple[TensorRTEngine, Path, bool]:
    """Return ``(engine, engine_path, built)`` from the cache, building (again) when needed."""
    source = file_sha256(onnx_path)
    table = None
    if build.precision == "int8":
        table = calibration_table_path(cache, graph, source, input_size)
        if calibration is not None:
            # Fresh frames: calibrate now (writes the table), so the key sees the new table.
            payload = build_engine(onnx_path, build, input_shapes, calibration, table)
            key = engine_key(onnx_path, graph, input_size, "int8", table, source)
            path = cache.store(key, payload)
            return TensorRTEngine(payload, device), path, True
    key = engine_key(onnx_path, graph, input_size, build.precision, table, source)

    def build_fn() -> bytes:
        return build_engine(onnx_path, build, input_shapes, None, table)

    path, built = cache.get_or_build(key, build_fn)
    try:
        return TensorRTEngine(path.read_bytes(), device), path, built
    except RuntimeError as err:
        if built:
            raise
        # Same key but unloadable (e.g. a driver or TensorRT patch update that keeps the
        # version string): rebuild instead of failing the node.
        LOG.warning("cached engine %s does not load (%s); rebuilding it", path, err)
        cache.evict(key)
        path, _ = cache.get_or_build(key, build_fn)
        return TensorRTEngine(path.read_bytes(), device), path, True


# ---------------------------------------------------------------------------------- backend
# dtype names the node and ssp_bench pass (``--dtype``); "int8" selects INT8 engines there.
_PRECISION_OF_DTYPE = {"float32": "fp32", "float16": "fp16", "int8": "int8"}


class TensorRTBackend:
    """Run the image and SSP engines of one model on one GPU (I/O fp32 torch CUDA tensors)."""

    name = "tensorrt"

    def __init__(self, sources: OnnxSources, build: TensorRTBuildConfig = TensorRTBuildConfig(),
                 cache: EngineCache | None = None, device: str | torch.device = "cuda",
                 calibration: dict[str, Iterable[dict[str, np.ndarray]]] | None = None) -> None:
        """Load (or build) both engines of ``sources``; ``calibration`` maps graph -> batches."""
        _import_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"the TensorRT backend runs on CUDA devices, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = build.precision
        # The Backend interface names precisions as torch dtypes; INT8 engines fall back to
        # FP16 (never FP32) for layers without INT8 kernels, so "float16" is the honest name.
        self.dtype = "float32" if build.precision == "fp32" else "float16"
        self.input_size: tuple[int, int] | None = sources.input_size
        self.num_classes = sources.num_classes
        self.metadata = sources.metadata
        self.cache = cache or EngineCache()
        self.engines: dict[str, TensorRTEngine] = {}
        self.engine_paths: dict[str, Path] = {}
        self.built: dict[str, bool] = {}
        shapes = {g: metadata_input_shapes(read_metadata(sources.graphs[g])) for g in GRAPHS}
        with torch.cuda.device(self.device):
            for graph in GRAPHS:
                feed = (calibration or {}).get(graph)
                engine, path, built = load_or_build_engine(
                    sources.graphs[graph], graph, sources.input_size, shapes[graph], build,
                    self.cache, feed, self.device.index)
                self.engines[graph], self.engine_paths[graph], self.built[graph] = (
                    engine, path, built)

    def image_step(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (1, C, H/r, W/r), feat (1, k, H/4, W/4)); r = the fusion stride."""
        self._check_image(image)
        out = self.engines["image"](image=image)
        return out["logits"], out["feat"]

    def ssp_step(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                 homography: torch.Tensor,
                 use_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim), all at the fusion resolution, for one SSP step."""
        self._check_image(image)
        out = self.engines["ssp"](image=image, prev_logits=prev_logits, prev_feat=prev_feat,
                                  homography=homography, use_prev=use_prev)
        return out["logits"], out["feat"], out["sim"]

    def synchronize(self) -> None:
        """Wait until the queued engine runs are done (for honest timings)."""
        torch.cuda.synchronize(self.device)

    def _check_image(self, image: torch.Tensor) -> None:
        expected = (1, 3, *self.input_size)
        if tuple(image.shape) != expected:
            raise ValueError(f"image must be {expected} (the engines are built for "
                             f"{self.input_size[0]}x{self.input_size[1]}, batch 1), got "
                             f"{tuple(image.shape)}")
        if image.device.type != "cuda":
            raise ValueError(f"image is on {image.device}; the TensorRT backend takes CUDA "
                             "tensors (keep frames on the GPU)")


def create(model_or_artifact: nn.Module | str | os.PathLike, device: str = "cuda",
           dtype: str | None = None, precision: str | None = None,
           input_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
           cache_dir: str | os.PathLike | None = None, workspace_gib: float = 4.0,
           optimization_level: int = 3,
           calibration: dict[str, Iterable[dict[str, np.ndarray]]] | None = None
           ) -> TensorRTBackend:
    """Build a :class:`TensorRTBackend` from a model, an artifact or an ``ssp_export`` folder.

    ``precision`` ("fp32", "fp16", "int8") wins over ``dtype`` ("float32" -> fp32,
    "float16" -> fp16, "int8" -> int8: the names the node and ``ssp_bench`` pass); neither
    given means fp16.
    INT8 needs ``calibration`` (see ``ssp_export tensorrt --precision int8 --calib-data``) or a
    calibration table already in the cache.
    """
    if precision is None:
        if dtype is not None and dtype not in _PRECISION_OF_DTYPE:
            raise ValueError(f"dtype {dtype!r} is not supported by TensorRT engines here; use "
                             "'float32', 'float16' or 'int8'")
        precision = _PRECISION_OF_DTYPE.get(dtype or "float16")
    build = TensorRTBuildConfig(precision=precision, workspace_gib=workspace_gib,
                                optimization_level=optimization_level)
    _import_tensorrt()  # fail before a (possibly long) ONNX export on machines without it
    cache = EngineCache(cache_dir)
    sources = resolve_onnx(model_or_artifact, input_size, opset, cache)
    return TensorRTBackend(sources, build, cache, device, calibration)


__all__ = ["TensorRTBackend", "TensorRTBuildConfig", "TensorRTEngine", "build_engine",
           "calibration_table_path", "create", "engine_key", "gpu_description",
           "load_or_build_engine", "tensorrt_status"]
