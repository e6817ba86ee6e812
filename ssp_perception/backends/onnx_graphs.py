"""ONNX graphs of an SSP model: the image step and the SSP step, self-describing, verified.

Two graphs per model (docs/ARCHITECTURE.md, key contracts; docs/DEPLOYMENT.md):

* ``image``: ``image (1, 3, H, W)`` -> ``logits (1, C, h, w)``, ``feat (1, k, H/4, W/4)``.
* ``ssp``: ``image``, ``prev_logits (1, C, h, w)``, ``prev_feat (1, k, H/4, W/4)``,
  ``homography (1, 3, 3)``, ``use_prev (1,)`` -> ``logits``, ``feat``, ``sim (1, 1, h, w)``.

(h, w) is the fusion resolution: (H, W) for the spec's models, (H/4, W/4) for models that fuse
at stride 4 (``upsample_before_mixing=False``, the lite preset), whose caller upsamples the
output (``Segmenter`` does, with the same :class:`SeparableResize`). k is the similarity
block's embedding width (the stage-1 channel count d for the spec's blocks).

All float32; ``image`` is normalised RGB (RGB/255, minus mean, over std: the values are in the
metadata). The state goes in and comes out, so the graphs are stateless; registration (the
homography) stays outside the graph, because feature matching and robust estimation have
data-dependent control flow that neither ONNX nor TensorRT express well, and because the node
may run it on another device. The warp itself (kornia ``warp_perspective``: an analytic 3x3
inverse and ``GridSample``) is inside, which needs opset >= 16.

Shapes are fixed by default (batch 1, one H x W): TensorRT specialises engines to one shape
anyway, and a stream's input size never changes. ``dynamic_hw=True`` marks H and W as symbolic
and is then verified at a second size, because a traced graph can silently keep sizes as
constants (it does with kornia 0.9's ``warp_perspective``, see docs/DEPLOYMENT.md).

Metadata (ONNX ``metadata_props``, all keys prefixed ``ssp.``): graph kind, input size, opset,
exporter, I/O names and shapes, the model config, and the artifact's own metadata and SHA-256,
so an ``.onnx`` file alone says what it is, as the artifact does.
"""

from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any
import warnings

import numpy as np
import torch
from torch import nn

from .engine_cache import CacheKey, EngineCache, file_sha256, write_atomic
from ..models.image_model import SeparableResize

GRAPHS = ("image", "ssp")
INPUT_NAMES = {"image": ("image",),
               "ssp": ("image", "prev_logits", "prev_feat", "homography", "use_prev")}
OUTPUT_NAMES = {"image": ("logits", "feat"), "ssp": ("logits", "feat", "sim")}
DEFAULT_OPSET = 17
MIN_OPSET = 16  # GridSample, used by the homography warp, exists from opset 16
MAX_OPSET = 20  # the newest opset torch's TorchScript exporter writes
META_PREFIX = "ssp."
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class OnnxExportConfig:
    """Configure the ONNX export of one graph."""

    input_size: tuple[int, int]
    """Network input (H, W); multiples of 32."""
    opset: int = DEFAULT_OPSET
    """ONNX opset, 16..20 (17 is widely supported: onnxruntime >= 1.11, TensorRT >= 8.6)."""
    dynamic_hw: bool = False
    """Mark H and W symbolic; verified at a second size, an error if the graph cannot follow."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if (len(self.input_size) != 2 or not all(isinstance(v, int) and v > 0 and v % 32 == 0
                                                 for v in self.input_size)):
            raise ValueError("OnnxExportConfig.input_size must be (H, W), positive multiples "
                             f"of 32, got {self.input_size!r}")
        if not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"OnnxExportConfig.opset must be an integer {MIN_OPSET}..{MAX_OPSET} "
                             f"(GridSample needs >= {MIN_OPSET}), got {self.opset!r}")


class ImageStepGraph(nn.Module):
    """Trace ``SSPModel.image_step``: encoder -> decoder -> logits at the fusion resolution.

    With ``input_size`` (and fusion at the input resolution, ``upsample_before_mixing``) the
    final upsampling is a :class:`SeparableResize`; the encoder and
    decoder are the model's own modules (the interfaces of SSP_SPEC §1.1), so the graph computes
    what ``image_step`` does, and the export parity check holds it to that.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model
        self.resize = None
        if input_size is not None and model.cfg.upsample_before_mixing:
            with torch.inference_mode():
                probe = model.image_model.decoder(
                    model.image_model.encoder(torch.zeros(1, 3, *input_size)))
            self.resize = SeparableResize(tuple(probe.shape[-2:]), tuple(input_size),
                                          model.cfg.upsample_mode)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (B, C, H/r, W/r), feat (B, k, H/4, W/4)) for a normalised image."""
        if self.resize is None:
            return self.model.image_step(image)
        feats = self.model.image_model.encoder(image)
        return (self.resize(self.model.image_model.decoder(feats)),
                self.model.similarity.embed(feats[0]))


class SSPStepGraph(nn.Module):
    """Trace ``SSPModel.step``: the image step above, then the model's own ``fuse``."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model
        self.image = ImageStepGraph(model, input_size)

    def forward(self, image: torch.Tensor, prev_logits: torch.Tensor, prev_feat: torch.Tensor,
                homography: torch.Tensor, use_prev: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused logits, feat, sim) for one SSP step."""
        logits, feat = self.image(image)
        out, sim = self.model.fuse(logits, feat, prev_logits, prev_feat, homography, use_prev)
        return out, feat, sim


def check_graph(graph: str) -> str:
    """Return ``graph`` if it is "image" or "ssp", else raise a clear error."""
    if graph not in GRAPHS:
        raise ValueError(f"graph {graph!r} is not one of {', '.join(GRAPHS)}")
    return graph


def example_homography() -> torch.Tensor:
    """Return a fixed (1, 3, 3) previous -> current homography: small rotation, shift, tilt.

    Mild enough that most of the frame stays in view, and with every entry non-trivial, so the
    warp's inverse, perspective divide and out-of-view zeros are all exercised.
    """
    return torch.tensor([[[0.995, -0.035, 3.2], [0.03, 1.004, -2.1], [2e-5, -1e-5, 1.0]]])


def example_inputs(model: nn.Module, graph: str, input_size: tuple[int, int],
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Return deterministic float32 CPU inputs of ``graph`` for ``model`` at ``input_size``.

    The SSP state is the model's own output on a second image, so ``prev_logits`` and
    ``prev_feat`` have realistic ranges, and ``use_prev`` is 1 so the fusion path is live.
    """
    check_graph(graph)
    gen = torch.Generator().manual_seed(seed)
    h, w = input_size
    image = torch.randn(1, 3, h, w, generator=gen)
    if graph == "image":
        return {"image": image}
    prev_image = torch.randn(1, 3, h, w, generator=gen)
    with torch.inference_mode():
        prev_logits, prev_feat = _cpu_fp32(model).image_step(prev_image)
    return {"image": image, "prev_logits": prev_logits.clone(), "prev_feat": prev_feat.clone(),
            "homography": example_homography(), "use_prev": torch.ones(1)}


def export_onnx(model: nn.Module, graph: str, config: OnnxExportConfig,
                metadata: Mapping[str, str] | None = None) -> bytes:
    """Trace ``graph`` of ``model`` to ONNX and return the serialized model with metadata.

    ``model`` is left untouched (a float32 CPU copy in eval mode is exported). ``metadata``
    adds ``ssp.``-prefixed keys (e.g. the artifact description, see :func:`artifact_metadata`).
    """
    import onnx  # optional dependency: only exports need it

    check_graph(graph)
    net = _cpu_fp32(model)
    # eval() on the wrapper too: torch.onnx.export restores the wrapper's train/eval mode
    # afterwards, recursively, which would leave BatchNorm of ``net`` in training mode.
    wrapper = _wrap(net, graph, None if config.dynamic_hw else config.input_size)
    inputs = example_inputs(net, graph, config.input_size)
    names_in, names_out = INPUT_NAMES[graph], OUTPUT_NAMES[graph]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript (not a dependency); kornia's shape checks trigger TracerWarnings that are
        # harmless for fixed shapes (and caught by the verification for dynamic ones).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper, tuple(inputs[n] for n in names_in), buf, dynamo=False,
                          opset_version=config.opset, input_names=list(names_in),
                          output_names=list(names_out), do_constant_folding=True,
                          dynamic_axes=(_dynamic_axes(graph, net.fusion_stride)
                                        if config.dynamic_hw else None))
    proto = onnx.load_from_string(buf.getvalue())
    with torch.inference_mode():
        outputs = wrapper(*(inputs[n] for n in names_in))
    props = {
        "format_version": FORMAT_VERSION,
        "graph": graph,
        "input_size": f"{config.input_size[0]}x{config.input_size[1]}",
        "dynamic_hw": str(bool(config.dynamic_hw)).lower(),
        "logit_resize": ("none (fusion at stride 4; the caller upsamples)"
                         if net.fusion_stride != 1 else
                         "F.interpolate" if config.dynamic_hw else "separable_matmul"),
        "opset": str(config.opset),
        "exporter": f"torch {torch.__version__} torchscript",
        "inputs": json.dumps({n: list(inputs[n].shape) for n in names_in}),
        "outputs": json.dumps({n: list(o.shape) for n, o in zip(names_out, outputs)}),
        "model_config": json.dumps(net.cfg.to_dict(), sort_keys=True),
        **dict(metadata or {}),
    }
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, str(value)
    proto.producer_name = "ssp_perception"
    proto.doc_string = (f"SSP {graph} step; inputs {', '.join(names_in)}; outputs "
                        f"{', '.join(names_out)}; see the ssp.* metadata and docs/DEPLOYMENT.md")
    onnx.checker.check_model(proto)
    payload = proto.SerializeToString()
    if config.dynamic_hw:
        _verify_dynamic(net, graph, payload, config.input_size)
    return payload


def artifact_metadata(meta: Any, artifact_sha256: str | None) -> dict[str, str]:
    """Return the ``ssp.``-less metadata entries that describe an artifact (meta + hash)."""
    out: dict[str, str] = {}
    if meta is not None:
        as_dict = meta.to_dict() if hasattr(meta, "to_dict") else meta
        out["artifact"] = json.dumps(as_dict, sort_keys=True)
    if artifact_sha256:
        out["artifact_sha256"] = artifact_sha256
    return out


def read_metadata(onnx_file: str | os.PathLike | bytes) -> dict[str, str]:
    """Return the ``ssp.`` metadata of an ONNX file or serialized model (prefix stripped)."""
    import onnx

    if isinstance(onnx_file, bytes):
        proto = onnx.load_from_string(onnx_file)
    else:
        proto = onnx.load(str(onnx_file), load_external_data=False)
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}
    if "graph" not in meta:
        raise ValueError(f"{onnx_file if not isinstance(onnx_file, bytes) else 'ONNX model'} "
                         "has no ssp.graph metadata: not exported by ssp_export")
    return meta


def metadata_input_shapes(meta: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """Return the input name -> shape map recorded at export time."""
    return {k: tuple(v) for k, v in json.loads(meta["inputs"]).items()}


def parse_size(text: str) -> tuple[int, int]:
    """Return (H, W) from "HxW"."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 384x640, got {text!r}") from None
    return h, w


def ort_run(session: Any, inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Run an onnxruntime session on CPU torch tensors; return its outputs by name."""
    feed = {i.name: inputs[i.name].detach().cpu().numpy() for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _verify_dynamic(net: nn.Module, graph: str, payload: bytes,
                    input_size: tuple[int, int]) -> None:
    import onnxruntime as ort

    other = (input_size[0] + 32, input_size[1] + 64)
    inputs = example_inputs(net, graph, other, seed=1)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is reported below, with advice
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    try:
        got = ort_run(session, inputs)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidArgument types
        raise ValueError(_DYNAMIC_HELP.format(other=other, err=str(err).splitlines()[0])) from err
    with torch.inference_mode():
        ref = _wrap(net, graph)(*(inputs[n] for n in INPUT_NAMES[graph]))
    for name, r in zip(OUTPUT_NAMES[graph], ref):
        if got[name].shape != tuple(r.shape) or not np.allclose(got[name], r.numpy(), atol=1e-3):
            raise ValueError(_DYNAMIC_HELP.format(other=other, err=f"output {name!r} differs"))


_DYNAMIC_HELP = (
    "the dynamic-H/W ONNX graph does not follow a {other} input ({err}): some size was traced "
    "as a constant (int() on a shape, or kornia warp_perspective's sampling grid). Export with "
    "fixed shapes (the default; one file per input size), see docs/DEPLOYMENT.md")


def _wrap(net: nn.Module, graph: str, input_size: tuple[int, int] | None = None) -> nn.Module:
    cls = ImageStepGraph if graph == "image" else SSPStepGraph
    return cls(net, input_size).eval()


def _dynamic_axes(graph: str, fusion_stride: int = 1) -> dict[str, dict[int, str]]:
    full = {2: "height", 3: "width"}
    quarter = {2: "height_4", 3: "width_4"}
    fused = full if fusion_stride == 1 else quarter
    axes = {"image": full, "logits": fused, "feat": quarter}
    if graph == "ssp":
        axes.update(prev_logits=fused, prev_feat=quarter, sim=fused)
    return axes


def _cpu_fp32(model: nn.Module) -> nn.Module:
    """Return ``model`` if it is already a float32 CPU module in eval mode, else such a copy."""
    params = list(model.parameters())
    if (not model.training and all(p.device.type == "cpu" and p.dtype == torch.float32
                                   for p in params)):
        return model
    return copy.deepcopy(model).float().cpu().eval()


def write_onnx(path: str | os.PathLike, payload: bytes) -> Path:
    """Write a serialized ONNX model atomically (temp file + rename)."""
    return write_atomic(path, payload)


# ---------------------------------------------------------------- sources for the backends
@dataclass(frozen=True)
class OnnxSources:
    """The two ONNX graphs a runtime backend loads, and what they say about themselves."""

    graphs: dict[str, Path]
    """Graph kind ("image", "ssp") -> ONNX file."""
    metadata: dict[str, str]
    """The ``ssp.`` metadata of the SSP graph (prefix stripped)."""
    input_size: tuple[int, int]
    """The (H, W) the graphs were exported for."""
    num_classes: int
    """Number of classes C."""


def export_files(model: nn.Module, out_dir: str | os.PathLike, config: OnnxExportConfig,
                 metadata: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Export both graphs of ``model`` into ``out_dir`` as ``image.onnx`` and ``ssp.onnx``."""
    out_dir = Path(out_dir)
    return {g: write_onnx(out_dir / f"{g}.onnx", export_onnx(model, g, config, metadata))
            for g in GRAPHS}


def resolve_onnx(model_or_artifact: nn.Module | str | os.PathLike,
                 input_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                 cache: EngineCache | None = None) -> OnnxSources:
    """Return the ONNX graphs for a model, an artifact file or an ``ssp_export onnx`` folder.

    * folder (``image.onnx`` + ``ssp.onnx``): used as is; ``input_size``, if given, must match.
    * ``.safetensors`` artifact: exported once into ``cache`` (keyed by the artifact's SHA-256,
      graph, size, opset and torch version) and reused from there afterwards.
    * in-memory ``SSPModel``: exported into ``cache`` under the SHA-256 of its weights.
    """
    cache = cache or EngineCache()
    if isinstance(model_or_artifact, nn.Module):
        size = tuple(input_size or model_or_artifact.cfg.input_size)
        digest = _state_sha256(model_or_artifact)
        graphs = _cached_exports(lambda: (model_or_artifact, None), digest, size, opset, cache)
        return _sources(graphs, size)
    path = Path(model_or_artifact)
    if path.is_dir():
        graphs = {g: path / f"{g}.onnx" for g in GRAPHS}
        missing = [str(p) for p in graphs.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not an ssp_export onnx folder: missing "
                                    f"{', '.join(missing)}")
        sources = _sources(graphs, None)
        if input_size is not None and tuple(input_size) != sources.input_size:
            raise ValueError(f"{path} holds graphs for {sources.input_size}, not "
                             f"{tuple(input_size)}; export that size with ssp_export onnx")
        return sources
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such artifact (.safetensors) or ONNX folder")
    from ..artifact import load_artifact, read_meta  # imports the model zoo: only when needed

    meta = read_meta(path)
    size = tuple(input_size or meta.input_size)
    digest = file_sha256(path)
    graphs = _cached_exports(lambda: (load_artifact(path)[0], meta), digest, size, opset, cache)
    return _sources(graphs, size)


def _cached_exports(load: Any, digest: str, size: tuple[int, int], opset: int,
                    cache: EngineCache) -> dict[str, Path]:
    config = OnnxExportConfig(input_size=size, opset=opset)
    loaded: list[Any] = []

    def build(graph: str) -> bytes:
        if not loaded:
            loaded.extend(load())
        model, meta = loaded
        return export_onnx(model, graph, config, artifact_metadata(meta, digest))

    graphs = {}
    for graph in GRAPHS:
        key = CacheKey(kind="onnx", graph=graph, source_sha256=digest, input_size=size,
                       runtime=f"torch {torch.__version__} opset {opset} "
                               f"format {FORMAT_VERSION}")
        graphs[graph], _ = cache.get_or_build(key, lambda g=graph: build(g))
    return graphs


def _sources(graphs: dict[str, Path], expected_size: tuple[int, int] | None) -> OnnxSources:
    metas = {g: read_metadata(p) for g, p in graphs.items()}
    for graph, meta in metas.items():
        if meta["graph"] != graph:
            raise ValueError(f"{graphs[graph]} holds the {meta['graph']!r} graph, not {graph!r}")
    sizes = {parse_size(m["input_size"]) for m in metas.values()}
    if len(sizes) != 1:
        raise ValueError(f"the image and ssp graphs were exported for different sizes {sizes}")
    size = sizes.pop()
    if expected_size is not None and size != tuple(expected_size):
        raise ValueError(f"ONNX graphs are for {size}, expected {tuple(expected_size)}")
    shapes = json.loads(metas["ssp"]["outputs"])
    return OnnxSources(graphs=graphs, metadata=metas["ssp"], input_size=size,
                       num_classes=int(shapes["logits"][1]))


def _state_sha256(model: nn.Module) -> str:
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["DEFAULT_OPSET", "GRAPHS", "INPUT_NAMES", "ImageStepGraph", "MAX_OPSET",
           "MIN_OPSET", "OUTPUT_NAMES", "OnnxExportConfig", "OnnxSources", "SSPStepGraph",
           "artifact_metadata", "check_graph", "example_homography", "example_inputs",
           "export_files", "export_onnx", "metadata_input_shapes", "ort_run", "parse_size",
           "read_metadata", "resolve_onnx", "write_onnx"]
