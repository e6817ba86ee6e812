"""Self-describing model artifacts: one ``.safetensors`` file with JSON metadata in its header.

The header's ``__metadata__`` (str -> str) holds, under ``"ssp_perception"``, the JSON form of
:class:`ArtifactMeta`: format version, model config, class set, mean/std, input size, stored
weight dtype and provenance. Loading needs nothing but the file, and nothing is unpickled.
Pretrained backbone weights (SAM2, timm, packages) load in ``models/pretrained.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime as dt
import json
import os
from pathlib import Path
import struct
import subprocess
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch

from . import __version__
from .classes import ClassSet
from .config import ModelConfig
from .files import atomic_output
from .models import create_model, SSPModel

FORMAT_VERSION = 1
META_KEY = "ssp_perception"
# Largest safetensors header we accept; real ones are a few tens of kB.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_LIST_LIMIT = 6
# Written by ssp_training.baselines (save_baseline: provenance "video_model" {"kind", "config"};
# ssp_train: provenance "model_kind"). Spelled out here: ssp_perception never imports
# ssp_training.
VIDEO_MODEL_KEY = "video_model"
MODEL_KIND_KEY = "model_kind"
BASELINE_KINDS = ("dff", "netwarp", "tcb_ppm", "tcb_ocr")


class ArtifactError(ValueError):
    """Raise when a model artifact or checkpoint file is missing, corrupt or does not fit."""


@dataclass(frozen=True)
class ArtifactMeta:
    """Describe an artifact: everything needed to rebuild, feed and label the model."""

    model: ModelConfig
    """Model configuration (architecture and class count)."""
    class_set: ClassSet
    """Label space: class names, colours, ignore index."""
    dtype: str = "float32"
    """dtype the floating-point weights are stored in ("float32" or "float16")."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How it was made: recipe, dataset, epochs, metrics, git_commit, created, ..."""
    format_version: int = FORMAT_VERSION
    """Artifact format version (this module reads version 1)."""

    @property
    def mean(self) -> tuple[float, float, float]:
        """Return the per-channel mean of RGB/255 input."""
        return self.model.mean

    @property
    def std(self) -> tuple[float, float, float]:
        """Return the per-channel std of RGB/255 input."""
        return self.model.std

    @property
    def input_size(self) -> tuple[int, int]:
        """Return the default network input (H, W)."""
        return self.model.input_size

    def to_dict(self) -> dict[str, Any]:
        """Return the plain-JSON form stored in the file header."""
        return {"format_version": self.format_version, "model": self.model.to_dict(),
                "class_set": self.class_set.to_dict(), "mean": list(self.mean),
                "std": list(self.std), "input_size": list(self.input_size),
                "dtype": self.dtype, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactMeta:
        """Parse :meth:`to_dict` output; raise ``ValueError`` saying what is wrong."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported artifact format version {version!r}; this "
                             f"ssp_perception {__version__} reads version {FORMAT_VERSION}")
        for key in ("model", "class_set"):
            if not isinstance(data.get(key), dict):
                raise ValueError(f"metadata has no {key!r} mapping")
        model = ModelConfig.from_dict(data["model"])
        class_set = ClassSet.from_dict(data["class_set"])
        # mean/std/input_size are duplicated at top level for readers that do not parse the
        # model config (e.g. ONNX metadata); they must agree with it.
        for key in ("mean", "std", "input_size"):
            if key in data and tuple(data[key]) != getattr(model, key):
                raise ValueError(f"metadata {key} {data[key]} disagrees with the model config's "
                                 f"{list(getattr(model, key))}")
        if model.num_classes != class_set.num_classes:
            raise ValueError(f"class count mismatch: the model config has {model.num_classes} "
                             f"classes, class set {class_set.name!r} has {class_set.num_classes}")
        dtype = data.get("dtype", "float32")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ValueError(f"provenance must be a mapping, got {type(provenance).__name__}")
        return cls(model=model, class_set=class_set, dtype=dtype, provenance=provenance)


def save_artifact(path: str | os.PathLike, model: SSPModel, class_set: ClassSet,
                  provenance: dict[str, Any] | None = None, half: bool = False) -> ArtifactMeta:
    """Write ``model`` and its description to ``path`` atomically; return the metadata written.

    ``half=True`` stores floating-point tensors as float16 (halves the file; loading casts back
    to the model's float32 parameters). ``provenance`` is any JSON-serialisable mapping;
    ``created``, ``ssp_perception_version`` and, when found, ``git_commit`` are filled in.
    """
    path = Path(path)
    if model.num_classes != class_set.num_classes:
        raise ArtifactError(f"{path}: model has {model.num_classes} classes but class set "
                            f"{class_set.name!r} has {class_set.num_classes}")
    prov = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "ssp_perception_version": __version__}
    commit = git_commit()
    if commit:
        prov["git_commit"] = commit
    prov.update(provenance or {})
    meta = ArtifactMeta(model=model.cfg, class_set=class_set,
                        dtype="float16" if half else "float32", provenance=prov)
    try:
        header = {META_KEY: json.dumps(meta.to_dict(), sort_keys=True), "format": "pt"}
    except TypeError as err:
        raise ArtifactError(f"{path}: provenance is not JSON-serialisable: {err}") from err
    tensors = _tensors_to_store(model, half, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return meta


def _tensors_to_store(model: SSPModel, half: bool, path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            halved = value.half()
            if not torch.isfinite(halved).all() and torch.isfinite(value).all():
                raise ArtifactError(f"{path}: tensor {name} overflows float16; save with "
                                    "half=False")
            value = halved
        # clone: safetensors refuses tensors that share storage with each other.
        tensors[name] = value.contiguous().clone()
    return tensors


def read_meta(path: str | os.PathLike) -> ArtifactMeta:
    """Return the metadata of the artifact at ``path``, reading only the header."""
    path = Path(path)
    header = _read_header(path)
    raw = header.get("__metadata__", {}).get(META_KEY)
    if raw is None:
        raise ArtifactError(f"{path}: safetensors file has no {META_KEY!r} metadata; expected "
                            "an ssp_perception artifact written by save_artifact")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: {META_KEY!r} metadata is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {META_KEY!r} metadata must be a JSON object")
    try:
        return ArtifactMeta.from_dict(data)
    except ValueError as err:
        raise ArtifactError(f"{path}: bad artifact metadata: {err}") from err


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header (8-byte length + JSON)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file (expected a .safetensors file "
                            "written by save_artifact)")
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ArtifactError(f"{path}: {size} bytes is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise ArtifactError(f"{path}: not a safetensors file (header length {length} does "
                                f"not fit a {size}-byte file); corrupt or another format")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{path}: not a safetensors file (header is not JSON)") from err
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: not a safetensors file (header is not a JSON object)")
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        if not isinstance(header.get("__metadata__", {}), dict):
            raise TypeError("__metadata__ is not a mapping")
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: corrupt safetensors header ({err!r})") from err
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise ArtifactError(f"{path}: truncated or corrupt: the header describes {expected} "
                            f"bytes but the file has {size}")
    return header


def load_artifact(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                  ) -> tuple[SSPModel, ArtifactMeta]:
    """Rebuild the model stored at ``path``; return ``(model in eval mode, metadata)``.

    Video-baseline artifacts (see :func:`baseline_kind`) are refused before any tensor is read.
    """
    path = Path(path)
    meta = read_meta(path)
    kind = baseline_kind(meta)
    if kind is not None:
        raise ArtifactError(f"{path}: this is a video-baseline artifact (kind {kind!r} in its "
                            "provenance), not an SSP/image model; load it with "
                            "ssp_training.baselines.load_baseline (or load_video_model), not "
                            "ssp_perception.artifact.load_artifact")
    try:
        tensors = load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise ArtifactError(f"{path}: corrupt safetensors data: {err}") from err
    try:
        model = create_model(meta.model)
    except (ValueError, RuntimeError) as err:
        raise ArtifactError(f"{path}: cannot build the model it describes: {err}") from err
    _check_state(path, model, tensors, meta)
    model.load_state_dict(tensors, strict=True)  # copies (and casts fp16) into fp32 params
    return model.to(map_location).eval(), meta


def baseline_kind(meta: ArtifactMeta) -> str | None:
    """Return the video-baseline kind an artifact's provenance names, or None for SSP/image.

    A ``video_model`` entry (``ssp_training.baselines.save_baseline``) marks a baseline whatever
    it holds; without one, a ``model_kind`` naming a baseline (``ssp_train``) does.
    """
    entry = meta.provenance.get(VIDEO_MODEL_KEY)
    if entry is not None:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        return str(kind) if kind is not None else "unknown"
    kind = meta.provenance.get(MODEL_KIND_KEY)
    return kind if kind in BASELINE_KINDS else None


def _check_state(path: Path, model: SSPModel, tensors: dict[str, torch.Tensor],
                 meta: ArtifactMeta) -> None:
    expected = model.state_dict()
    classifier = "image_model.decoder.classifier.weight"
    if classifier in tensors and tensors[classifier].shape[0] != meta.model.num_classes:
        raise ArtifactError(f"{path}: class count mismatch: the weights have "
                            f"{tensors[classifier].shape[0]} classes, the metadata "
                            f"{meta.model.num_classes}")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ArtifactError(
            f"{path}: weights do not match the architecture in its metadata "
            f"({meta.model.preset}, {meta.model.backbone}): "
            f"missing {_brief(missing)}; unexpected {_brief(unexpected)}; "
            f"shape mismatches (stored vs expected) {_brief(shapes)}")


def _brief(items: list[str]) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return f"{len(items)}: " + ", ".join(items[:_LIST_LIMIT]) + more


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """Return the git commit of ``cwd`` (default: this package's checkout), or None."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


__all__ = ["ArtifactError", "ArtifactMeta", "baseline_kind", "FORMAT_VERSION",
           "load_artifact", "read_meta", "save_artifact"]
